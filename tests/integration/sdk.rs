//! SPEC §8: an official AWS SDK drives the management API unchanged. boto3's
//! `apigatewaymanagementapi` client (installed from PyPI into `target/sdk-venv` by
//! `scripts/sdk-venv.sh`, idempotently) runs `tests/sdk/management_sdk.py` against the
//! real binary: PostToConnection, GetConnection, DeleteConnection and the
//! GoneException mapping with `auth = "none"` and with `auth = "sigv4"` and matching
//! credentials; wrong credentials → 403 ForbiddenException. The test installs the venv
//! itself when it is missing; it never skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::{assert_silent, now_ms, raw_with, ws_headers};
use crate::mgmt::*;
use crate::support::*;

const ACCESS_KEY: &str = "AKIAWSGATETEST000001";
const SECRET_KEY: &str = "wsgate/Test+Secret=Key0123456789abcdefXY";
pub const USER_AGENT: &str = "sdk-test-client/1.0";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` in the repository root; kills it after `limit`. Returns
/// (success, stdout, stderr).
pub fn run(program: &Path, args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let pipe = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let h = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = r.read_to_end(&mut all);
            b.lock().unwrap().extend(all);
        });
        (buf, h)
    };
    let (out, ho) = pipe(Box::new(child.stdout.take().unwrap()));
    let (err, he) = pipe(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (ho.join(), he.join());
            panic!(
                "{} {args:?} still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                program.display(),
                String::from_utf8_lossy(&out.lock().unwrap()),
                String::from_utf8_lossy(&err.lock().unwrap())
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = (ho.join(), he.join());
    let stdout = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    (status.success(), stdout, stderr)
}

/// The venv's python, after `scripts/sdk-venv.sh` made sure boto3 is installed.
pub fn sdk_python() -> PathBuf {
    let script = repo().join("scripts/sdk-venv.sh");
    let (ok, out, err) = run(&script, &[], Duration::from_secs(600));
    assert!(
        ok,
        "scripts/sdk-venv.sh failed (python3 and PyPI are needed for the SDK test):\n{out}\n{err}"
    );
    let python = PathBuf::from(out.lines().last().unwrap_or("").trim());
    assert!(
        python.is_file(),
        "sdk-venv.sh printed no python path: {out:?}"
    );
    python
}

fn gateway(management: &str) -> Gateway {
    Gateway::start_with(&whoami_config(management, ""), &["--workers", "2"])
}

/// A client with a User-Agent, and its id.
pub fn client(gw: &Gateway) -> (Raw, String) {
    let mut headers = ws_headers("127.0.0.1");
    headers.push(("User-Agent".into(), USER_AGENT.into()));
    let mut raw = raw_with(gw.listen, "/prod", &headers);
    let id = id_of(&mut raw);
    (raw, id)
}

/// Runs the SDK script against `gw` for `id`; panics with its output on failure.
fn run_sdk(
    gw: &Gateway,
    id: &str,
    mode: &str,
    message: &str,
    key: &str,
    secret: &str,
    since_ms: u64,
) {
    let url = format!("http://{}/prod", gw.management);
    let creds = [
        "--access-key",
        key,
        "--secret-key",
        secret,
        "--region",
        "us-east-1",
    ];
    management_sdk(gw, &url, id, mode, message, since_ms, &creds);
}

/// Runs `tests/sdk/management_sdk.py` (boto3) in `mode` against `url` for the
/// connection `id`, with `extra` arguments (credentials, region, `--ca`), and fails
/// the test with its output and the gateway's when it fails.
pub fn management_sdk(
    gw: &Gateway,
    url: &str,
    id: &str,
    mode: &str,
    message: &str,
    since_ms: u64,
    extra: &[&str],
) {
    let python = sdk_python();
    let since = since_ms.to_string();
    // `--id=ID`: an id may start with `-`, which argparse would take for an option.
    let id_arg = format!("--id={id}");
    let mut args = vec![
        "tests/sdk/management_sdk.py",
        "--url",
        url,
        &id_arg,
        "--mode",
        mode,
        "--message",
        message,
        "--user-agent",
        USER_AGENT,
        "--not-before-ms",
        &since,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run(&python, &args, Duration::from_secs(90));
    assert!(
        ok,
        "management_sdk.py --mode {mode} against {url} failed:\nstdout:\n{out}\nstderr:\n{err}\ngateway stderr:\n{}",
        gw.stderr()
    );
}

/// The happy path: the client got the posted message, then DeleteConnection's close.
fn sdk_round_trip(management: &str, key: &str, secret: &str) {
    let gw = gateway(management);
    let since = now_ms();
    let (mut raw, id) = client(&gw);
    let message = format!("héllo from boto3 ✓ {{\"to\":\"{id}\"}}");
    run_sdk(&gw, &id, "ok", &message, key, secret, since);
    assert_eq!(raw.recv_text(), message, "the PostToConnection message");
    raw.expect_close_with(1000, "Connection Closed Normally");
}

#[test]
fn boto3_drives_the_management_api_with_auth_none() {
    sdk_round_trip("auth = \"none\"", "AKIDANYTHING", "any-secret");
}

#[test]
fn boto3_drives_the_management_api_with_sigv4() {
    sdk_round_trip(
        &format!(
            "auth = \"sigv4\"\naccess_key_id = {}\nsecret_access_key = {}",
            toml_str(ACCESS_KEY),
            toml_str(SECRET_KEY)
        ),
        ACCESS_KEY,
        SECRET_KEY,
    );
}

#[test]
fn boto3_with_wrong_credentials_gets_403_forbidden() {
    let gw = gateway(&format!(
        "auth = \"sigv4\"\naccess_key_id = {}\nsecret_access_key = {}",
        toml_str(ACCESS_KEY),
        toml_str(SECRET_KEY)
    ));
    let since = now_ms();
    let (mut raw, id) = client(&gw);
    // A wrong secret, then an unknown access key with the right secret.
    run_sdk(
        &gw,
        &id,
        "forbidden",
        "forged",
        ACCESS_KEY,
        "not-the-secret",
        since,
    );
    run_sdk(
        &gw,
        &id,
        "forbidden",
        "forged",
        "AKIAUNKNOWN000000000",
        SECRET_KEY,
        since,
    );
    // Nothing was posted, nothing closed.
    assert_silent(&mut raw, Duration::from_millis(200));
    assert_eq!(id_of(&mut raw), id);
    // Unsigned plain HTTP is refused too.
    call(
        gw.management,
        "GET",
        &format!("/prod/@connections/{id}"),
        &[],
        b"",
    )
    .expect_error(403, "ForbiddenException");
}
