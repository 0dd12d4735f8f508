//! Startup check that io_uring works here, with the cause and the fix when it does not
//! (TigerBeetle's habit: tell the operator the knob). Docker's default seccomp profile,
//! `kernel.io_uring_disabled` and old kernels are the usual culprits.

/// The tuning.md heading the operator is sent to when the cause is not one of the known ones
/// (kept in step with tuning.md by a test).
const TUNING_SECTION: &str = "\"cannot start: io_uring ...\"";

/// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19): completion work is not forced onto a thread that
/// is running; it runs at the thread's next system call (a sleeping thread is still woken).
const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;
/// Offset of `flags` in `struct io_uring_params` (after `sq_entries` and `cq_entries`).
const PARAMS_FLAGS_OFFSET: usize = 8;

/// The io_uring builder every core thread (and ringload's) starts its runtime with: with
/// `IORING_SETUP_COOP_TASKRUN` where the kernel has it.
///
/// Why: without it, data arriving on a socket interrupts the thread (an IPI) to retry the
/// pending read at once, in the kernel. On loopback and on busy machines the sender still
/// holds the socket's lock at that moment, so the retry spins on it: in a profile of ringload
/// against smtp-sink, 36 % of ringload's CPU was that spin. Deferring the retry to the thread's
/// next system call halved ringload's CPU per message and cut the relay's by about a fifth,
/// with 25-35 % more messages accepted a second (tuning.md, "Cores and pinning").
pub fn ring_builder(entries: u32) -> tokio_uring::Builder {
    static COOP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let mut b = tokio_uring::builder();
    b.entries(entries);
    if *COOP.get_or_init(|| setup(IORING_SETUP_COOP_TASKRUN).is_ok()) {
        b.uring_builder(tokio_uring::uring_builder().setup_coop_taskrun());
    }
    b
}

/// io_uring_setup(2) with `flags`, closed again at once.
fn setup(flags: u32) -> std::io::Result<()> {
    // SAFETY: io_uring_params is a plain C struct for which all-zero bytes are valid input.
    let mut params: [u8; 120] = [0; 120];
    params[PARAMS_FLAGS_OFFSET..PARAMS_FLAGS_OFFSET + 4].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: io_uring_setup(2) takes an entry count and a pointer to a params struct that
    // it fills in; 120 bytes is the size of struct io_uring_params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is the descriptor io_uring_setup just returned to us.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Creates and destroys a small io_uring instance. The error explains how to fix it.
pub fn io_uring() -> Result<(), String> {
    let Err(err) = setup(0) else { return Ok(()) };
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let fallback = format!("see the section {TUNING_SECTION} in tuning.md");
    let hint = match (err.raw_os_error(), disabled.as_deref().map(str::trim)) {
        (Some(libc::ENOSYS), _) => {
            "the kernel has no io_uring (it needs Linux 5.10 or later, built with CONFIG_IO_URING), or a \
             seccomp filter hides it: under Docker, run with a seccomp profile that allows io_uring_setup, \
             io_uring_enter and io_uring_register (e.g. --security-opt seccomp=unconfined to test)"
        }
        (Some(libc::EPERM), Some("2")) => {
            "io_uring is disabled by sysctl: run `sysctl -w kernel.io_uring_disabled=0` (and set it in \
             /etc/sysctl.d/ to keep it)"
        }
        (Some(libc::EPERM), Some("1")) => {
            "io_uring is limited to a group by sysctl kernel.io_uring_disabled=1: add ringrelay's user to the \
             group in kernel.io_uring_group, or set kernel.io_uring_disabled=0"
        }
        (Some(libc::EPERM), _) => {
            "io_uring is not permitted: a seccomp filter (Docker's default profile, systemd's \
             SystemCallFilter) or a security module blocks it; allow io_uring_setup/io_uring_enter/io_uring_register"
        }
        (Some(libc::ENOMEM), _) => {
            "not enough locked memory for io_uring on this kernel: raise RLIMIT_MEMLOCK (ulimit -l, or \
             LimitMEMLOCK=infinity in the systemd unit)"
        }
        _ => &fallback,
    };
    Err(format!("io_uring is not available: {err}. {hint}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_uring_works_on_the_test_machine() {
        // CI runs where io_uring is enabled; if this fails, the message says why.
        super::io_uring().unwrap();
    }

    #[test]
    fn cooperative_task_running_is_used_where_the_kernel_has_it() {
        // Linux 5.19 and later (the test machines) accept the flag; a runtime starts with it.
        assert!(super::setup(super::IORING_SETUP_COOP_TASKRUN).is_ok());
        assert_eq!(super::ring_builder(8).start(async { 1 + 1 }), 2);
        // An unknown flag is refused, which is how an older kernel answers COOP_TASKRUN.
        assert!(super::setup(1 << 31).is_err());
    }

    #[test]
    fn the_fallback_hint_names_a_section_of_tuning_md() {
        let tuning = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning.md")).unwrap();
        let heading = format!("### {}", super::TUNING_SECTION);
        assert!(tuning.lines().any(|l| l.starts_with(&heading)), "tuning.md has no heading {heading}");
    }
}
