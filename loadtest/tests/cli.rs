//! synack-load's command line: bad input refused with the flag and exit status 2; every flag
//! documented.
//! No timed assertions: counts and classes only.

mod common;
use common::bin;

#[test]
fn bad_input_is_refused_with_the_flag_and_exit_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["flood", "no-such-host.invalid:80"],
            "no-such-host.invalid:80",
        ),
        (&["flood", "127.0.0.1:0"], "port 0"),
        (&["flood", "127.0.0.1"], "127.0.0.1"),
        (&["flood", "127.0.0.1:9", "--rate", "0"], "--rate"),
        (
            &["flood", "127.0.0.1:9", "--rate", "1k", "--concurrency", "4"],
            "--concurrency",
        ),
        (&["flood", "127.0.0.1:9", "--ramp", "5k..1k"], "--ramp"),
        (
            &["flood", "127.0.0.1:9", "--duration", "soon"],
            "--duration",
        ),
        (&["flood", "127.0.0.1:9", "--source", "::1"], "--source"),
        (&["flood", "127.0.0.1:9", "--threads", "0"], "--threads"),
        (
            &["flood", "127.0.0.1:9", "--server-workers", "2"],
            "--server-workers",
        ),
        (
            &["flood", "127.0.0.1:9", "--server-accept-in-workers"],
            "--server-accept-in-workers",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let out = bin().args(["flood", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--rate",
        "--concurrency",
        "--ramp",
        "--duration",
        "--connections",
        "--send",
        "--read",
        "--read-timeout",
        "--hold",
        "--close",
        "--fresh-sockets",
        "--threads",
        "--source",
        "--connect-timeout",
        "--json",
        "--hlog",
        "--quiet",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("[default: 10s]"));
    assert!(help.contains("[default: 3s]"));
}
