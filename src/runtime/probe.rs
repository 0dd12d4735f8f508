//! Startup check that io_uring works here, with the cause and the fix when it does not
//! (TigerBeetle's habit: tell the operator the knob). Docker's default seccomp profile,
//! `kernel.io_uring_disabled` and old kernels are the usual culprits.

/// The tuning.md heading the operator is sent to when the cause is not one of the known ones
/// (kept in step with tuning.md by a test).
const TUNING_SECTION: &str = "\"cannot start: io_uring ...\"";

/// Creates and destroys a small io_uring instance. The error explains how to fix it.
pub fn io_uring() -> Result<(), String> {
    // SAFETY: io_uring_params is a plain C struct for which all-zero bytes are valid input.
    let mut params: [u8; 120] = [0; 120];
    // SAFETY: io_uring_setup(2) takes an entry count and a pointer to a params struct that
    // it fills in; 120 bytes is the size of struct io_uring_params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: fd is the descriptor io_uring_setup just returned to us.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
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
    fn the_fallback_hint_names_a_section_of_tuning_md() {
        let tuning = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning.md")).unwrap();
        let heading = format!("### {}", super::TUNING_SECTION);
        assert!(tuning.lines().any(|l| l.starts_with(&heading)), "tuning.md has no heading {heading}");
    }
}
