//! SPEC §1–§2: the command line, the ready line, `--check`, and config errors that
//! name the file, the key and the problem and exit 1 before accepting anything.

use std::net::TcpListener;

use crate::support::*;

/// Asserts a run failed as a config error: exit code 1, no ready line, and stderr
/// naming the config file and each of `mentions`.
fn assert_config_error(exit: &Exit, mentions: &[&str]) {
    assert_eq!(
        exit.status.code(),
        Some(1),
        "a config error exits 1; status {:?}, stderr:\n{}",
        exit.status,
        exit.stderr
    );
    assert!(
        !exit.stdout.contains("wsgate ready"),
        "no ready line on error: {:?}",
        exit.stdout
    );
    let path = exit.config_path.display().to_string();
    assert!(
        exit.stderr.contains(&path),
        "stderr must name the file {path}:\n{}",
        exit.stderr
    );
    for m in mentions {
        assert!(
            exit.stderr.contains(m),
            "stderr must mention {m:?}:\n{}",
            exit.stderr
        );
    }
}

fn echo() -> String {
    echo_config("")
}

// ---- the ready line and flags -----------------------------------------------

#[test]
fn ready_line_carries_real_ports_and_workers() {
    let gw = Gateway::start_with(&echo(), &["--workers", "3"]);
    let ready = parse_ready(&gw.ready_line);
    assert_eq!(ready.listen.ip().to_string(), "127.0.0.1");
    assert_eq!(ready.management.ip().to_string(), "127.0.0.1");
    assert_ne!(ready.listen.port(), ready.management.port());
    assert_eq!(ready.workers, 3);
    // The advertised port really serves.
    assert_eq!(gw.client().ask("ping?"), "ping?");
}

#[test]
fn stdout_carries_only_the_ready_line() {
    let mut gw = Gateway::start_with(&echo(), &["--log-level", "debug"]);
    let mut c = gw.client();
    assert_eq!(c.ask("make some logs"), "make some logs");
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(200));
    gw.kill();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        gw.stdout_lines(),
        vec![gw.ready_line.clone()],
        "logs go to stderr"
    );
}

#[test]
fn workers_flag_overrides_the_file() {
    let cfg = echo().replace("[server]\n", "[server]\nworkers = 2\n");
    let gw = Gateway::start_with(&cfg, &["--workers", "1"]);
    assert_eq!(gw.workers, 1);
    assert!(gw.ready_line.ends_with("workers=1"), "{:?}", gw.ready_line);
}

#[test]
fn workers_from_the_file_are_used_without_the_flag() {
    let cfg = echo().replace("[server]\n", "[server]\nworkers = 2\n");
    let gw = Gateway::start(&cfg);
    assert_eq!(gw.workers, 2);
}

#[test]
fn listen_flag_overrides_the_file() {
    // The file names a port that is taken; the flag's address is used instead.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = echo().replace(
        "listen = \"127.0.0.1:0\"\nhandshake",
        &format!("listen = \"127.0.0.1:{port}\"\nhandshake"),
    );
    assert!(cfg.contains(&format!("127.0.0.1:{port}")));
    let gw = Gateway::start_with(&cfg, &["--listen", "127.0.0.1:0"]);
    assert_ne!(gw.listen.port(), port);
    assert_eq!(gw.client().ask("over"), "over");
}

#[test]
fn management_listen_flag_overrides_the_file() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = echo().replace(
        "[management]\nlisten = \"127.0.0.1:0\"",
        &format!("[management]\nlisten = \"127.0.0.1:{port}\""),
    );
    assert!(cfg.contains(&format!("127.0.0.1:{port}")));
    let gw = Gateway::start_with(&cfg, &["--management-listen", "127.0.0.1:0"]);
    assert_ne!(gw.management.port(), port);
}

#[test]
fn log_flags_are_accepted() {
    let gw = Gateway::start_with(&echo(), &["--log-level", "warn", "--log-format", "json"]);
    assert_eq!(gw.client().ask("json logs"), "json logs");
}

#[test]
fn pin_cores_flag_is_accepted() {
    let gw = Gateway::start_with(&echo(), &["--pin-cores", "--workers", "2"]);
    assert_eq!(gw.workers, 2);
    assert_eq!(gw.client().ask("pinned"), "pinned");
}

// ---- --check ----------------------------------------------------------------

#[test]
fn check_on_a_good_config_prints_the_route_table_and_exits_0() {
    let cfg = routing_config("$request.body.action", &["sendmessage", "join-room"], true);
    let exit = run_to_exit(&cfg, &["--check"]);
    assert_eq!(exit.status.code(), Some(0), "stderr:\n{}", exit.stderr);
    for key in ["sendmessage", "join-room", "$default"] {
        assert!(
            exit.stdout.contains(key),
            "route table must list {key:?}:\n{}",
            exit.stdout
        );
    }
    assert!(
        !exit.stdout.contains("wsgate ready"),
        "--check does not serve"
    );
}

#[test]
fn check_on_a_bad_config_exits_1() {
    let cfg = echo().replace("[server]\n", "[server]\nlistn = \"127.0.0.1:0\"\n");
    let exit = run_to_exit(&cfg, &["--check"]);
    assert_config_error(&exit, &["listn"]);
}

// ---- config errors ----------------------------------------------------------

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    let cfg = echo().replace("[server]\n", "[server]\nlistn = \"127.0.0.1:0\"\n");
    assert_config_error(&run_to_exit(&cfg, &[]), &["listn"]);
}

#[test]
fn unknown_key_in_a_route_is_an_error() {
    let cfg = echo() + "[routes.other]\nintegration = \"echo\"\nroute_reponse = true\n";
    assert_config_error(&run_to_exit(&cfg, &[]), &["route_reponse"]);
}

#[test]
fn unknown_section_is_an_error() {
    let cfg = echo() + "[extras]\nx = 1\n";
    assert_config_error(&run_to_exit(&cfg, &[]), &["extras"]);
}

#[test]
fn unclosed_brace_in_the_expression_is_an_error() {
    let cfg = routing_config("${request.body.a", &["a"], true);
    assert_config_error(&run_to_exit(&cfg, &[]), &["route_selection_expression"]);
}

#[test]
fn route_naming_a_missing_integration_is_an_error() {
    let mut cfg = base_config("$request.body.action", "");
    cfg.push_str(&mock_integration("echo", "$input.body"));
    cfg.push_str(&route("$default", "echo"));
    cfg.push_str(&route("sendmessage", "nope"));
    assert_config_error(
        &run_to_exit(&cfg, &[]),
        &["sendmessage", "integration", "nope"],
    );
}

#[test]
fn bad_duration_is_an_error() {
    let cfg = echo().replace(
        "handshake_timeout = \"1s\"",
        "handshake_timeout = \"5 parsecs\"",
    );
    assert!(cfg.contains("5 parsecs"));
    assert_config_error(&run_to_exit(&cfg, &[]), &["handshake_timeout"]);
}

#[test]
fn bad_limits_duration_is_an_error() {
    let cfg = echo().replace("[limits]\n", "[limits]\nidle_timeout = \"soon\"\n");
    assert_config_error(&run_to_exit(&cfg, &[]), &["idle_timeout"]);
}

#[test]
fn bad_binary_mode_is_an_error() {
    let cfg = echo_config("binary = \"maybe\"");
    assert_config_error(&run_to_exit(&cfg, &[]), &["binary"]);
}

#[test]
fn listen_port_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = echo().replace(
        "listen = \"127.0.0.1:0\"\nhandshake",
        &format!("listen = \"127.0.0.1:{port}\"\nhandshake"),
    );
    assert!(cfg.contains(&format!("127.0.0.1:{port}")));
    assert_config_error(&run_to_exit(&cfg, &[]), &["listen"]);
    drop(taken);
}

#[test]
fn management_port_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = echo().replace(
        "[management]\nlisten = \"127.0.0.1:0\"",
        &format!("[management]\nlisten = \"127.0.0.1:{port}\""),
    );
    assert!(cfg.contains(&format!("127.0.0.1:{port}")));
    assert_config_error(&run_to_exit(&cfg, &[]), &["listen"]);
    drop(taken);
}

#[test]
fn unparseable_listen_address_is_an_error() {
    let cfg = echo().replace(
        "listen = \"127.0.0.1:0\"\nhandshake",
        "listen = \"not an address\"\nhandshake",
    );
    assert_config_error(&run_to_exit(&cfg, &[]), &["listen"]);
}

#[test]
fn management_auth_none_on_a_public_address_is_an_error() {
    let cfg = echo().replace(
        "[management]\nlisten = \"127.0.0.1:0\"",
        "[management]\nlisten = \"0.0.0.0:0\"\nauth = \"none\"",
    );
    assert_config_error(&run_to_exit(&cfg, &[]), &["auth"]);
}

#[test]
fn unknown_integration_type_is_an_error() {
    let cfg = echo() + "[integrations.odd]\ntype = \"carrier_pigeon\"\n\n" + &route("odd", "odd");
    assert_config_error(&run_to_exit(&cfg, &[]), &["type"]);
}

#[test]
fn toml_syntax_error_is_an_error_naming_the_file() {
    let cfg = echo() + "[routes.broken\n";
    assert_config_error(&run_to_exit(&cfg, &[]), &[]);
}

#[test]
fn missing_config_file_is_an_error_naming_the_file() {
    let path = temp_dir().join("does-not-exist.toml");
    let exit = run_path_to_exit(&path, &[]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert_config_error(&exit, &[]);
}

#[test]
fn workers_default_to_the_available_cores() {
    let gw = Gateway::start(&echo());
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(gw.workers, cores, "{:?}", gw.ready_line);
}

#[cfg(target_os = "linux")]
#[test]
fn soft_open_file_limit_is_raised_to_the_hard_limit() {
    let gw = Gateway::start_with_soft_nofile(&echo(), 256);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    assert_eq!(
        fields[0], fields[1],
        "soft limit must equal the hard limit: {line:?}"
    );
}
