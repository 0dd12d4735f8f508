//! What the client sends is what the sink stores, byte for byte: a message file full of
//! dot-stuffing traps (lines that are `.`, start with `.` or `..`, a body line that looks like
//! an end of data) goes out with DATA (dot-stuffed) and with BDAT (raw), and `sink --save`
//! writes back exactly our two headers followed by the file, with the envelope beside it.

mod common;

use common::{Sink, count, run_ok};

const MESSAGE: &[u8] = b"From: <sender@example.test>\r\nTo: <rcpt@example.test>\r\nSubject: dots\r\n\
Message-ID: <dots@example.test>\r\nDate: Tue, 25 Nov 2025 09:47:55 +0000\r\n\r\n\
.\r\n..\r\n.leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\nQUIT\r\n\r\n. \r\nend\r\n";

#[test]
fn saved_messages_equal_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("saved");
    let file = dir.path().join("dots.eml");
    std::fs::write(&file, MESSAGE).unwrap();
    let sink = Sink::start(&["--save", save.to_str().unwrap()]);
    for bdat in [false, true] {
        let mut args = vec![
            "--target",
            sink.addr.to_string().leak(),
            "--message-file",
            file.to_str().unwrap(),
            "--messages",
            "3",
            "--concurrency",
            "1",
            "--per-connection",
            "3",
            "--from",
            "bounce{n}@example.test",
            "--to",
            "rcpt{r}@example.test",
            "--rcpts",
            "2",
        ];
        if bdat {
            args.push("--bdat");
        }
        let run = run_ok(&args);
        assert_eq!(count(&run, "ok"), 3);
    }
    let fin = sink.stop();
    assert_eq!(fin["messages"], 6);
    let mut emls: Vec<_> = std::fs::read_dir(&save)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    emls.sort();
    assert_eq!(emls.len(), 6);
    for eml in &emls {
        let bytes = std::fs::read(eml).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.split("\r\n");
        assert!(lines.next().unwrap().starts_with("X-Ringload-Id: "), "{text}");
        assert!(lines.next().unwrap().starts_with("X-Ringload-Sent: "), "{text}");
        let header_len = text.match_indices("\r\n").nth(1).unwrap().0 + 2;
        assert_eq!(&bytes[header_len..], MESSAGE, "{}", eml.display());
        let env: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(eml.with_extension("json")).unwrap()).unwrap();
        assert!(env["from"].as_str().unwrap().starts_with("bounce"));
        assert_eq!(env["rcpts"], serde_json::json!(["rcpt0@example.test", "rcpt1@example.test"]));
        assert_eq!(env["size"].as_u64(), Some(bytes.len() as u64));
    }
}
