//! SPEC §14 + §17: the authorizer-and-models test template served with its models
//! (request validation, SPEC §14). Registered in `main.rs` once the models support
//! is merged: until then the config rejects the `[models]` keys this test needs.

use crate::import::*;
use crate::support::*;

#[test]
fn the_models_template_checks_and_validates_its_routes() {
    let f = game_fixture();
    let t = template("authorizer-models.yaml");
    let t = t.to_str().unwrap();
    let endpoint = f.url("");
    let (code, out, err) = run(&["--template", t, "--check", "--lambda-endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}{err}");
    let gw = Served::start(&["--template", t, "--lambda-endpoint", &endpoint]);
    let mut c = Client::connect(gw.listen, "/prod?token=allow");
    let bad = |reply: String| {
        assert!(
            reply.starts_with(r#"{"message" : "Bad request body", "connectionId": ""#),
            "{reply}"
        )
    };
    // `join`: request_model "join" (room: lowercase letters).
    let ok = r#"{"action":"join","room":"abc"}"#;
    assert_eq!(c.ask(ok), format!("pong:{ok}"));
    bad(c.ask(r#"{"action":"join","room":"ABC"}"#));
    bad(c.ask(r#"{"action":"join"}"#));
    // `$default`: model chosen by $request.body.kind ("move"), else "join".
    let mv = r#"{"kind":"move","x":1,"y":2}"#;
    assert_eq!(c.ask(mv), format!("pong:{mv}"));
    bad(c.ask(r#"{"kind":"move","x":"1","y":2}"#));
    bad(c.ask(r#"{"kind":"other"}"#));
    bad(c.ask("not json"));
    // Without its models (Validation=off) nothing is validated.
    let gw = Served::start(&[
        "--template",
        t,
        "--lambda-endpoint",
        &endpoint,
        "--parameter",
        "Validation=off",
    ]);
    let mut c = Client::connect(gw.listen, "/prod?token=allow");
    assert_eq!(c.ask("not json"), "pong:not json");
}
