# Intake load: T threads, each one SMTP connection sending N/T messages (1 KiB) back to back.
import smtplib, sys, threading, time
port, total, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = "Subject: load\r\n\r\n" + ("x" * 70 + "\r\n") * 14
errors = []
def worker(n):
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        s.ehlo("load.test")
        for i in range(n):
            s.sendmail("load@example.test", ["r@dest.test"], body)
        s.quit()
    except Exception as e:
        errors.append(e)
t0 = time.time()
ts = [threading.Thread(target=worker, args=(total // threads,)) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
dt = time.time() - t0
print(f"{total} messages in {dt:.2f}s = {total/dt:.0f} msg/s, errors {len(errors)}")
