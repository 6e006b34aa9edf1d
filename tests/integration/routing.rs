//! SPEC §4 (reference §1.3): route selection, stringification, the Forbidden frame, and
//! the mock integration's template variables (SPEC §5).

use crate::support::*;

/// The payload of the AWS documentation's evaluation table.
const AWS_PAYLOAD: &str = r#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;

/// Starts one gateway for `expression` with routes `keys` (+ `$default`), every route
/// answering its route key, and asserts each `(message, expected route)` on one
/// connection.
fn assert_routes(expression: &str, keys: &[&str], with_default: bool, cases: &[(&str, &str)]) {
    let gw = Gateway::start(&routing_config(expression, keys, with_default));
    let mut c = gw.client();
    let mut wrong = Vec::new();
    for (message, expected) in cases {
        let got = c.ask(message);
        if &got != expected {
            wrong.push(format!(
                "message {message:?}: routed to {got:?}, expected {expected:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "expression {expression:?}:\n{}",
        wrong.join("\n")
    );
}

/// Route keys that the AWS table's results could collide with.
const TABLE_KEYS: &[&str] = &["join", "chat", "chat/join", "join-", "action", "room1234"];

// ---- the AWS evaluation table, one row per test ------------------------------

#[test]
fn unwrapped_variable_selects_join() {
    assert_routes(
        "$request.body.action",
        TABLE_KEYS,
        true,
        &[(AWS_PAYLOAD, "join")],
    );
}

#[test]
fn wrapped_variable_selects_join() {
    assert_routes(
        "${request.body.action}",
        TABLE_KEYS,
        true,
        &[(AWS_PAYLOAD, "join")],
    );
}

#[test]
fn two_variables_with_static_text_select_chat_slash_join() {
    assert_routes(
        "${request.body.service}/${request.body.action}",
        TABLE_KEYS,
        true,
        &[
            (AWS_PAYLOAD, "chat/join"),
            (r#"{"service":"chat"}"#, "$default"),
        ],
    );
}

#[test]
fn path_that_is_not_found_evaluates_to_empty_text() {
    assert_routes(
        "${request.body.action}-${request.body.invalidPath}",
        TABLE_KEYS,
        true,
        &[
            (AWS_PAYLOAD, "join-"),
            (r#"{"action":"join","invalidPath":"x"}"#, "$default"),
        ],
    );
}

#[test]
fn static_expression_selects_its_own_text() {
    assert_routes(
        "action",
        TABLE_KEYS,
        true,
        &[
            (AWS_PAYLOAD, "action"),
            (r#"{"anything":1}"#, "action"),
            // Not JSON goes to $default whatever the expression.
            ("not json", "$default"),
        ],
    );
}

#[test]
fn escaped_dollar_default_selects_the_default_route() {
    assert_routes("\\$default", TABLE_KEYS, true, &[(AWS_PAYLOAD, "$default")]);
}

#[test]
fn escaped_dollar_after_a_variable_is_literal_text() {
    assert_routes(
        "${request.body.action}\\$x",
        &["join", "join$x", "join-x"],
        true,
        &[(AWS_PAYLOAD, "join$x")],
    );
}

#[test]
fn nested_path_selects_room1234() {
    assert_routes(
        "$request.body.data.room",
        TABLE_KEYS,
        true,
        &[
            (AWS_PAYLOAD, "room1234"),
            (r#"{"data":"room1234"}"#, "$default"),
            (r#"{"room":"room1234"}"#, "$default"),
        ],
    );
}

#[test]
fn indexed_path_selects_the_array_element() {
    assert_routes(
        "$request.body.items[1]",
        &["a", "b", "c"],
        true,
        &[
            (r#"{"items":["a","b","c"]}"#, "b"),
            (r#"{"items":["c","a"]}"#, "a"),
            (r#"{"items":["a"]}"#, "$default"),
            (r#"{"items":"abc"}"#, "$default"),
            (r#"{"items":{"1":"b"}}"#, "$default"),
        ],
    );
}

#[test]
fn index_followed_by_a_name_inside_a_template() {
    assert_routes(
        "${request.body.a[0].b}-x",
        &["y-x", "-x"],
        false,
        &[
            (r#"{"a":[{"b":"y"}]}"#, "y-x"),
            (r#"{"a":[]}"#, "-x"),
            (r#"{"a":[{"c":"y"}]}"#, "-x"),
        ],
    );
}

// ---- stringification and matching (SPEC §4) ---------------------------------

const VALUE_KEYS: &[&str] = &[
    "join",
    "leave",
    "Join",
    "5",
    "1.50",
    "-7",
    "1e3",
    "true",
    "false",
    "[a, b]",
    "[1, [2, 3]]",
    "{k=v}",
    "{k=v, k2=v2}",
];

fn assert_action_routes(cases: &[(&str, &str)]) {
    assert_routes("$request.body.action", VALUE_KEYS, true, cases);
}

#[test]
fn string_values_are_used_without_quotes() {
    assert_action_routes(&[
        (r#"{"action":"join"}"#, "join"),
        (r#"{"action":"5"}"#, "5"),
        (r#"{"action":"true"}"#, "true"),
    ]);
}

#[test]
fn escaped_string_values_are_unescaped_before_matching() {
    assert_action_routes(&[
        (r#"{"action":"jo\u0069n"}"#, "join"),
        (r#"{"act\u0069on":"leave"}"#, "leave"),
    ]);
}

#[test]
fn numbers_are_their_json_text_as_sent() {
    assert_action_routes(&[
        (r#"{"action":5}"#, "5"),
        (r#"{"action":1.50}"#, "1.50"),
        (r#"{"action":-7}"#, "-7"),
        (r#"{"action":1e3}"#, "1e3"),
        (r#"{"action":5.0}"#, "$default"),
    ]);
}

#[test]
fn booleans_are_true_and_false() {
    assert_action_routes(&[
        (r#"{"action":true}"#, "true"),
        (r#"{"action":false}"#, "false"),
    ]);
}

#[test]
fn null_is_empty_and_goes_to_default() {
    assert_action_routes(&[(r#"{"action":null}"#, "$default")]);
}

#[test]
fn arrays_are_bracketed_with_comma_space() {
    assert_action_routes(&[
        (r#"{"action":["a","b"]}"#, "[a, b]"),
        (r#"{"action":[ "a" , "b" ]}"#, "[a, b]"),
        (r#"{"action":[1,[2,3]]}"#, "[1, [2, 3]]"),
    ]);
}

#[test]
fn objects_are_braced_key_equals_value() {
    assert_action_routes(&[
        (r#"{"action":{"k":"v"}}"#, "{k=v}"),
        (r#"{"action":{"k":"v","k2":"v2"}}"#, "{k=v, k2=v2}"),
    ]);
}

#[test]
fn duplicate_keys_last_one_wins() {
    assert_action_routes(&[
        (r#"{"action":"join","action":"leave"}"#, "leave"),
        (r#"{"action":"leave","action":"join"}"#, "join"),
        (r#"{"action":"leave","x":1,"action":5}"#, "5"),
    ]);
}

#[test]
fn route_keys_match_case_sensitively() {
    assert_action_routes(&[
        (r#"{"action":"Join"}"#, "Join"),
        (r#"{"action":"JOIN"}"#, "$default"),
        (r#"{"Action":"join"}"#, "$default"),
        (r#"{"action":"join "}"#, "$default"),
        (r#"{"action":"TRUE"}"#, "$default"),
    ]);
}

#[test]
fn whitespace_around_json_does_not_matter() {
    assert_action_routes(&[(" \n{ \"action\" :\t\"join\" }\r\n ", "join")]);
}

#[test]
fn missing_key_goes_to_default() {
    assert_action_routes(&[(r#"{"other":"join"}"#, "$default"), ("{}", "$default")]);
}

#[test]
fn non_json_goes_to_default() {
    assert_action_routes(&[
        ("hello", "$default"),
        ("join", "$default"),
        (r#"{"action":"join""#, "$default"),
        (r#"{"action":"join"} trailing"#, "$default"),
        ("{action:join}", "$default"),
    ]);
}

#[test]
fn empty_message_goes_to_default() {
    // $context.routeKey of an empty message is "$default", never empty.
    assert_action_routes(&[("", "$default")]);
}

#[test]
fn json_that_is_not_an_object_goes_to_default() {
    assert_action_routes(&[
        (r#""hi""#, "$default"),
        ("42", "$default"),
        ("[1]", "$default"),
        (r#"[{"action":"join"}]"#, "$default"),
        ("true", "$default"),
        ("null", "$default"),
    ]);
}

#[test]
fn routing_keeps_working_after_many_messages_on_one_connection() {
    let gw = Gateway::start(&routing_config("$request.body.action", VALUE_KEYS, true));
    let mut c = gw.client();
    for i in 0..200 {
        let (msg, want) = match i % 4 {
            0 => (r#"{"action":"join"}"#, "join"),
            1 => ("garbage", "$default"),
            2 => (r#"{"action":[1,[2,3]]}"#, "[1, [2, 3]]"),
            _ => (
                r#"{"action":"leave","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
                "leave",
            ),
        };
        assert_eq!(c.ask(msg), want, "message #{i} {msg:?}");
    }
}

// ---- no $default: the Forbidden frame ---------------------------------------

fn forbidden_gateway(limits: &str) -> Gateway {
    let mut c = base_config("$request.body.action", limits);
    c.push_str(&mock_integration("key", "$context.routeKey"));
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&route("join", "key"));
    c.push_str(&route("whoami", "who"));
    Gateway::start(&c)
}

#[test]
fn unmatched_message_without_default_gets_the_forbidden_frame_and_stays_open() {
    let gw = forbidden_gateway("");
    let mut raw = gw.raw();
    raw.send_text("hello");
    let (opcode, payload, _) = raw.message_frames();
    assert_eq!(opcode, OP_TEXT, "the Forbidden frame is text");
    let frame = String::from_utf8(payload).unwrap();
    parse_error_frame(&frame, "Forbidden");
    raw.send_text(r#"{"action":"join"}"#);
    assert_eq!(raw.recv_text(), "join");
}

#[test]
fn unmatched_json_key_without_default_gets_forbidden() {
    let gw = forbidden_gateway("");
    let mut c = gw.client();
    parse_error_frame(&c.ask(r#"{"action":"leave"}"#), "Forbidden");
    parse_error_frame(&c.ask(r#"{"action":"JOIN"}"#), "Forbidden");
    assert_eq!(c.ask(r#"{"action":"join"}"#), "join");
}

#[test]
fn forbidden_frames_carry_the_connection_id_and_a_fresh_request_id() {
    let gw = forbidden_gateway("");
    let mut c = gw.client();
    let own_id = c.ask(r#"{"action":"whoami"}"#);
    assert_id(&own_id);
    let (conn1, req1) = parse_error_frame(&c.ask("first"), "Forbidden");
    let (conn2, req2) = parse_error_frame(&c.ask("{\"action\":null}"), "Forbidden");
    assert_eq!(conn1, own_id, "Forbidden names this connection");
    assert_eq!(conn2, own_id, "Forbidden names this connection");
    assert_ne!(req1, req2, "each message gets its own requestId");
    assert_ne!(req1, conn1);

    let mut other = gw.client();
    let (conn3, _) = parse_error_frame(&other.ask("x"), "Forbidden");
    assert_ne!(conn3, own_id, "another connection has another id");
}

#[test]
fn binary_message_without_default_gets_forbidden_when_binary_is_allowed() {
    let gw = forbidden_gateway("binary = \"allow\"");
    let mut c = gw.client();
    // Binary always goes to $default, even when its bytes look like a route's JSON.
    c.send_binary(br#"{"action":"join"}"#);
    parse_error_frame(&c.recv_text(), "Forbidden");
    assert_eq!(c.ask(r#"{"action":"join"}"#), "join");
}

#[test]
fn binary_message_goes_to_default_even_if_it_names_a_route() {
    let mut cfg = base_config("$request.body.action", "binary = \"allow\"");
    cfg.push_str(&mock_integration("key", "$context.routeKey"));
    cfg.push_str(&route("join", "key"));
    cfg.push_str(&route("$default", "key"));
    let gw = Gateway::start(&cfg);
    let mut c = gw.client();
    c.send_binary(br#"{"action":"join"}"#);
    assert_eq!(c.recv_text(), "$default");
}

// ---- the mock integration's template (SPEC §5) -------------------------------

fn template_gateway(template: &str) -> Gateway {
    let mut c = base_config("$request.body.action", "");
    c.push_str(&mock_integration("t", template));
    c.push_str(&route("$default", "t"));
    c.push_str(&route("go", "t"));
    Gateway::start(&c)
}

#[test]
fn template_context_stage_is_the_stage_name() {
    let gw = template_gateway("$context.stage");
    assert_eq!(gw.client().ask("x"), "prod");
}

#[test]
fn template_context_event_type_is_message() {
    let gw = template_gateway("$context.eventType");
    assert_eq!(gw.client().ask("x"), "MESSAGE");
}

#[test]
fn template_mixes_literal_text_and_variables() {
    let gw = template_gateway("route=$context.routeKey stage=$context.stage body=$input.body!");
    let mut c = gw.client();
    assert_eq!(c.ask("hi"), "route=$default stage=prod body=hi!");
    assert_eq!(
        c.ask(r#"{"action":"go"}"#),
        r#"route=go stage=prod body={"action":"go"}!"#
    );
}

#[test]
fn template_literal_text_alone_is_sent_as_is() {
    let gw = template_gateway("{\"ok\": true}");
    assert_eq!(gw.client().ask("anything"), "{\"ok\": true}");
}

#[test]
fn template_request_id_is_an_id_fresh_per_message() {
    let gw = template_gateway("$context.requestId");
    let mut c = gw.client();
    let ids: Vec<String> = (0..5).map(|_| c.ask("x")).collect();
    for id in &ids {
        assert_id(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "requestIds repeat: {ids:?}");
}

#[test]
fn template_message_id_is_an_id_fresh_per_message() {
    let gw = template_gateway("$context.messageId");
    let mut c = gw.client();
    let ids: Vec<String> = (0..5).map(|_| c.ask("x")).collect();
    for id in &ids {
        assert_id(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "messageIds repeat: {ids:?}");
}

#[test]
fn template_connection_id_is_stable_per_connection_and_distinct_across() {
    let gw = template_gateway("$context.connectionId");
    let mut a = gw.client();
    let mut b = gw.client();
    let a1 = a.ask("x");
    let a2 = a.ask("y");
    let b1 = b.ask("x");
    assert_id(&a1);
    assert_id(&b1);
    assert_eq!(a1, a2, "one connection, one id");
    assert_ne!(a1, b1, "two connections, two ids");
}

#[test]
fn template_request_and_connection_ids_differ() {
    let gw = template_gateway("$context.connectionId $context.requestId $context.messageId");
    let reply = gw.client().ask("x");
    let ids: Vec<&str> = reply.split(' ').collect();
    assert_eq!(ids.len(), 3, "{reply:?}");
    for id in &ids {
        assert_id(id);
    }
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
}

// ---- results by route (SPEC §5) ---------------------------------------------

fn results_gateway() -> Gateway {
    let mut c = base_config("$request.body.action", "");
    c.push_str(&mock_integration("key", "$context.routeKey"));
    c.push_str(
        "[integrations.fail]\ntype = \"mock\"\nstatus = 500\nresponse_template = \"boom\"\n\n",
    );
    c.push_str(
        "[integrations.teapot]\ntype = \"mock\"\nstatus = 418\nresponse_template = \"short and stout\"\n\n",
    );
    c.push_str(&route("$default", "key"));
    c.push_str(&route("fail", "fail"));
    c.push_str(&route("teapot", "teapot"));
    c.push_str("[routes.oneway]\nintegration = \"key\"\nroute_response = false\n\n");
    c.push_str("[routes.failquiet]\nintegration = \"fail\"\n\n");
    Gateway::start(&c)
}

#[test]
fn one_way_route_sends_nothing_back() {
    let gw = results_gateway();
    let mut c = gw.client();
    c.send_text(r#"{"action":"oneway"}"#);
    // The next frame seen is the reply to the following message.
    assert_eq!(c.ask("not json"), "$default");
}

#[test]
fn non_2xx_result_with_a_route_response_gets_internal_server_error() {
    let gw = results_gateway();
    let mut c = gw.client();
    let (own_id, _) = parse_error_frame(&c.ask(r#"{"action":"fail"}"#), "Internal server error");
    let (conn, _) = parse_error_frame(&c.ask(r#"{"action":"teapot"}"#), "Internal server error");
    assert_eq!(conn, own_id);
    // The connection stays open.
    assert_eq!(c.ask(r#"{"action":"nothing"}"#), "$default");
}

#[test]
fn non_2xx_result_without_a_route_response_sends_nothing() {
    let gw = results_gateway();
    let mut c = gw.client();
    c.send_text(r#"{"action":"failquiet"}"#);
    assert_eq!(c.ask("next"), "$default");
}
