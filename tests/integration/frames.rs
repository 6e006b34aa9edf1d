//! SPEC §7 and RFC 6455 framing: echoes, limits, close codes, protocol errors, written
//! as raw frames so the bytes on the wire are what is asserted.

use std::io::Write;
use std::thread;
use std::time::Duration;

use crate::support::*;

/// Small limits: frames up to 1 KiB, messages up to 4 KiB, binary rejected (default).
fn small() -> Gateway {
    Gateway::start(&echo_config(
        "max_frame_bytes = 1024\nmax_message_bytes = 4096",
    ))
}

/// Small limits with binary allowed.
fn small_binary() -> Gateway {
    Gateway::start(&echo_config(
        "max_frame_bytes = 1024\nmax_message_bytes = 4096\nbinary = \"allow\"",
    ))
}

// ---- echoes -----------------------------------------------------------------

#[test]
fn text_message_is_echoed_as_text() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send_text("hello, gateway");
    let (opcode, payload, frames) = raw.message_frames();
    assert_eq!(opcode, OP_TEXT);
    assert_eq!(payload, b"hello, gateway");
    assert!(
        frames.iter().all(|f| f.rsv == 0),
        "no extension negotiated: {frames:?}"
    );
}

#[test]
fn tungstenite_client_gets_its_text_echoed() {
    let gw = small();
    let mut c = gw.client();
    assert_eq!(
        c.ask("{\"action\":\"anything\",\"x\":[1,2]}"),
        "{\"action\":\"anything\",\"x\":[1,2]}"
    );
    assert_eq!(c.ask("second"), "second");
}

#[test]
fn utf8_text_is_echoed_byte_for_byte() {
    let gw = small();
    let mut raw = gw.raw();
    let text = "héllo wörld — 日本語 🎉";
    raw.send_text(text);
    assert_eq!(raw.recv_text(), text);
}

#[test]
fn fragmented_text_message_is_reassembled_and_echoed() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(false, OP_TEXT, b"frag");
    raw.send(false, OP_CONT, b"men");
    raw.send(true, OP_CONT, b"ted");
    assert_eq!(raw.recv_text(), "fragmented");
}

#[test]
fn utf8_character_split_across_fragments_is_accepted() {
    let gw = small();
    let mut raw = gw.raw();
    let bytes = "a€b".as_bytes(); // '€' is 3 bytes
    raw.send(false, OP_TEXT, &bytes[..2]);
    raw.send(true, OP_CONT, &bytes[2..]);
    assert_eq!(raw.recv_text(), "a€b");
}

#[test]
fn ping_between_fragments_is_answered_and_the_message_still_echoes() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(false, OP_TEXT, b"left-");
    raw.send(true, OP_PING, b"mid");
    raw.send(true, OP_CONT, b"right");
    let pong = raw.frame();
    assert_eq!(
        (pong.opcode, pong.fin, pong.payload.as_slice()),
        (OP_PONG, true, &b"mid"[..])
    );
    assert_eq!(raw.recv_text(), "left-right");
}

#[test]
fn empty_text_message_is_echoed_as_an_empty_message() {
    // A `$input.body` template echoes the message itself, so an empty message comes
    // back empty (README: other empty renderings send nothing, SPEC §5).
    let gw = small();
    let mut raw = gw.raw();
    raw.send_text("");
    raw.send_text("after-empty");
    assert_eq!(raw.recv_text(), "");
    assert_eq!(raw.recv_text(), "after-empty");
}

#[test]
fn message_written_one_byte_at_a_time_is_echoed() {
    let gw = small();
    let mut raw = gw.raw();
    let bytes = masked(
        true,
        OP_TEXT,
        "{\"action\":\"slow\",\"data\":\"one byte per write\"}".as_bytes(),
    );
    for b in &bytes {
        raw.stream.write_all(&[*b]).unwrap();
        raw.stream.flush().unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        raw.recv_text(),
        "{\"action\":\"slow\",\"data\":\"one byte per write\"}"
    );
}

#[test]
fn several_messages_in_one_write_are_all_echoed_in_order() {
    let gw = small();
    let mut raw = gw.raw();
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend(masked(true, OP_TEXT, format!("m{i}").as_bytes()));
    }
    raw.write(&bytes);
    let mut got: Vec<String> = (0..10).map(|_| raw.recv_text()).collect();
    // Replies may overtake each other (SPEC §5); every message is answered once.
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn frame_sent_together_with_the_upgrade_request_is_processed() {
    let gw = small();
    let mut s = gw.tcp();
    let mut bytes = upgrade_request("/prod").into_bytes();
    bytes.extend(masked(true, OP_TEXT, b"early bird"));
    s.write_all(&bytes).unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101, "{resp:?}");
    let mut raw = Raw { stream: s };
    assert_eq!(raw.recv_text(), "early bird");
}

#[test]
fn large_message_is_echoed_intact() {
    let gw = Gateway::start(&echo_config(
        "max_frame_bytes = 262144\nmax_message_bytes = 262144",
    ));
    let mut raw = gw.raw();
    let text: String = (0..100 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    raw.send_text(&text);
    let got = raw.recv_text();
    assert_eq!(got.len(), text.len());
    assert!(got == text, "100 KiB echo differs");
}

#[test]
fn message_at_exactly_the_limits_is_accepted() {
    let gw = small();
    let mut raw = gw.raw();
    let chunk = "x".repeat(1024);
    for i in 0..4 {
        raw.send(
            i == 3,
            if i == 0 { OP_TEXT } else { OP_CONT },
            chunk.as_bytes(),
        );
    }
    assert_eq!(raw.recv_text(), chunk.repeat(4));
}

#[test]
fn outbound_message_is_fragmented_to_max_frame_bytes() {
    let gw = Gateway::start(&echo_config(
        "max_frame_bytes = 1024\nmax_message_bytes = 8192",
    ));
    let mut raw = gw.raw();
    let text: String = (0..4000).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    for (i, chunk) in text.as_bytes().chunks(1000).enumerate() {
        raw.send(i == 3, if i == 0 { OP_TEXT } else { OP_CONT }, chunk);
    }
    let (opcode, payload, frames) = raw.message_frames();
    assert_eq!(opcode, OP_TEXT);
    assert_eq!(payload, text.as_bytes());
    assert!(
        frames.len() >= 4,
        "4000 bytes need at least 4 frames of <= 1024: {}",
        frames.len()
    );
    for f in &frames {
        assert!(
            f.payload.len() <= 1024,
            "outbound frame of {} bytes",
            f.payload.len()
        );
        assert_eq!(f.rsv, 0);
    }
}

#[test]
fn binary_message_is_echoed_as_binary_when_allowed() {
    let gw = small_binary();
    let mut raw = gw.raw();
    let data: Vec<u8> = vec![0x00, 0xff, 0xfe, 0x80, 0x01, 0xc3];
    raw.send(true, OP_BINARY, &data);
    let (opcode, payload, _) = raw.message_frames();
    assert_eq!(opcode, OP_BINARY);
    assert_eq!(payload, data);
}

#[test]
fn tungstenite_client_gets_binary_echoed_when_allowed() {
    let gw = small_binary();
    let mut c = gw.client();
    c.send_binary(&[1, 2, 3, 250]);
    match c.recv() {
        tungstenite::Message::Binary(b) => assert_eq!(&b[..], &[1, 2, 3, 250]),
        other => panic!("expected binary, got {other:?}"),
    }
}

// ---- control frames ---------------------------------------------------------

#[test]
fn ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(true, OP_PING, b"are you there?");
    let f = raw.frame();
    assert_eq!(
        f,
        Frame {
            fin: true,
            rsv: 0,
            opcode: OP_PONG,
            payload: b"are you there?".to_vec()
        }
    );
    // and the connection keeps working
    raw.send_text("yes");
    assert_eq!(raw.recv_text(), "yes");
}

#[test]
fn ping_with_125_byte_payload_is_answered() {
    let gw = small();
    let mut raw = gw.raw();
    let payload = vec![b'z'; 125];
    raw.send(true, OP_PING, &payload);
    let f = raw.frame();
    assert_eq!((f.opcode, f.payload), (OP_PONG, payload));
}

#[test]
fn empty_ping_is_answered_with_an_empty_pong() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(true, OP_PING, b"");
    let f = raw.frame();
    assert_eq!((f.opcode, f.fin, f.payload.len()), (OP_PONG, true, 0));
}

#[test]
fn unsolicited_pong_is_ignored() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(true, OP_PONG, b"whatever");
    raw.send_text("next");
    assert_eq!(raw.recv_text(), "next");
}

#[test]
fn client_close_1000_is_echoed_with_1000_and_tcp_closed() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(true, OP_CLOSE, &close_payload(1000, b"bye"));
    let f = raw.frame();
    assert_eq!(f.opcode, OP_CLOSE, "{f:?}");
    assert_eq!(f.close_code(), Some(1000), "{f:?}");
    wait_closed(&mut raw.stream, READ_TIMEOUT);
}

#[test]
fn client_close_4000_is_echoed_with_4000() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(true, OP_CLOSE, &close_payload(4000, b"app"));
    let f = raw.frame();
    assert_eq!(f.close_code(), Some(4000), "{f:?}");
    wait_closed(&mut raw.stream, READ_TIMEOUT);
}

#[test]
fn empty_client_close_is_answered_with_a_close() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send(true, OP_CLOSE, b"");
    let f = raw.frame();
    assert_eq!(f.opcode, OP_CLOSE, "{f:?}");
    assert!(
        f.payload.is_empty() || f.close_code() == Some(1000),
        "{f:?}"
    );
    wait_closed(&mut raw.stream, READ_TIMEOUT);
}

// ---- limits: 1009, 1003, 1007 -----------------------------------------------

#[test]
fn frame_larger_than_max_frame_bytes_closes_with_1009() {
    let gw = small();
    let mut raw = gw.raw();
    raw.write_lossy(&masked(true, OP_TEXT, &vec![b'a'; 1025]));
    raw.expect_close(1009);
}

#[test]
fn fragmented_message_larger_than_max_message_bytes_closes_with_1009() {
    let gw = small();
    let mut raw = gw.raw();
    let chunk = vec![b'a'; 1000];
    let mut bytes = masked(false, OP_TEXT, &chunk);
    for _ in 0..3 {
        bytes.extend(masked(false, OP_CONT, &chunk));
    }
    bytes.extend(masked(true, OP_CONT, &chunk)); // 5000 > 4096
    raw.write_lossy(&bytes);
    raw.expect_close(1009);
}

#[test]
fn oversized_frame_header_alone_closes_with_1009() {
    // The length in the header is enough to know; the payload never comes.
    let gw = small();
    let mut raw = gw.raw();
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.write_lossy(&header);
    raw.expect_close(1009);
}

#[test]
fn binary_message_closes_with_1003_when_rejected() {
    let gw = small();
    let mut raw = gw.raw();
    raw.write_lossy(&masked(true, OP_BINARY, &[1, 2, 3]));
    raw.expect_close(1003);
}

#[test]
fn fragmented_binary_message_closes_with_1003_when_rejected() {
    let gw = small();
    let mut raw = gw.raw();
    let mut bytes = masked(false, OP_BINARY, &[1, 2]);
    bytes.extend(masked(true, OP_CONT, &[3, 4]));
    raw.write_lossy(&bytes);
    raw.expect_close(1003);
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let gw = small();
    let mut raw = gw.raw();
    raw.write_lossy(&masked(true, OP_TEXT, &[b'o', b'k', 0xff, 0xfe]));
    raw.expect_close(1007);
}

#[test]
fn invalid_utf8_across_fragments_closes_with_1007() {
    let gw = small();
    let mut raw = gw.raw();
    // 0xE2 0x82 starts '€'; the continuation then brings an ASCII byte instead of 0xAC.
    let mut bytes = masked(false, OP_TEXT, &[b'a', 0xe2, 0x82]);
    bytes.extend(masked(true, OP_CONT, b"b"));
    raw.write_lossy(&bytes);
    raw.expect_close(1007);
}

#[test]
fn truncated_utf8_at_message_end_closes_with_1007() {
    let gw = small();
    let mut raw = gw.raw();
    raw.write_lossy(&masked(true, OP_TEXT, &[b'a', 0xe2, 0x82]));
    raw.expect_close(1007);
}

#[test]
fn invalid_utf8_close_reason_closes_with_1007() {
    let gw = small();
    let mut raw = gw.raw();
    raw.write_lossy(&masked(
        true,
        OP_CLOSE,
        &close_payload(1000, &[0xff, 0xfe, 0xfd]),
    ));
    raw.expect_close(1007);
}

// ---- protocol errors: 1002 --------------------------------------------------

fn expect_1002(bytes: &[u8]) {
    let gw = small();
    let mut raw = gw.raw();
    raw.write_lossy(bytes);
    raw.expect_close(1002);
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    expect_1002(&encode_frame(true, 0, OP_TEXT, None, b"no mask"));
}

#[test]
fn reserved_bit_1_closes_with_1002() {
    expect_1002(&encode_frame(true, 4, OP_TEXT, Some([1, 2, 3, 4]), b"rsv1"));
}

#[test]
fn reserved_bit_2_closes_with_1002() {
    expect_1002(&encode_frame(true, 2, OP_TEXT, Some([1, 2, 3, 4]), b"rsv2"));
}

#[test]
fn reserved_bit_3_on_a_ping_closes_with_1002() {
    expect_1002(&encode_frame(true, 1, OP_PING, Some([1, 2, 3, 4]), b"rsv3"));
}

#[test]
fn unknown_data_opcode_3_closes_with_1002() {
    expect_1002(&masked(true, 0x3, b"three"));
}

#[test]
fn unknown_control_opcode_11_closes_with_1002() {
    expect_1002(&masked(true, 0xB, b"eleven"));
}

#[test]
fn fragmented_ping_closes_with_1002() {
    expect_1002(&masked(false, OP_PING, b"frag"));
}

#[test]
fn ping_with_126_byte_payload_closes_with_1002() {
    expect_1002(&masked(true, OP_PING, &[b'p'; 126]));
}

#[test]
fn close_with_126_byte_payload_closes_with_1002() {
    let mut p = close_payload(1000, b"");
    p.extend(std::iter::repeat_n(b'r', 124));
    expect_1002(&masked(true, OP_CLOSE, &p));
}

#[test]
fn continuation_without_a_start_closes_with_1002() {
    expect_1002(&masked(true, OP_CONT, b"orphan"));
}

#[test]
fn unfinished_continuation_without_a_start_closes_with_1002() {
    expect_1002(&masked(false, OP_CONT, b"orphan"));
}

#[test]
fn new_text_frame_inside_a_fragmented_message_closes_with_1002() {
    let mut bytes = masked(false, OP_TEXT, b"first ");
    bytes.extend(masked(true, OP_TEXT, b"second"));
    expect_1002(&bytes);
}

#[test]
fn new_binary_frame_inside_a_fragmented_message_closes_with_1002() {
    let gw = small_binary();
    let mut raw = gw.raw();
    let mut bytes = masked(false, OP_TEXT, b"first ");
    bytes.extend(masked(true, OP_BINARY, b"second"));
    raw.write_lossy(&bytes);
    raw.expect_close(1002);
}

#[test]
fn close_with_a_one_byte_payload_closes_with_1002() {
    expect_1002(&masked(true, OP_CLOSE, &[0x03]));
}

#[test]
fn close_code_1005_closes_with_1002() {
    expect_1002(&masked(true, OP_CLOSE, &close_payload(1005, b"")));
}

#[test]
fn close_code_999_closes_with_1002() {
    expect_1002(&masked(true, OP_CLOSE, &close_payload(999, b"")));
}

#[test]
fn close_code_1004_closes_with_1002() {
    expect_1002(&masked(true, OP_CLOSE, &close_payload(1004, b"")));
}

#[test]
fn close_code_1006_closes_with_1002() {
    expect_1002(&masked(true, OP_CLOSE, &close_payload(1006, b"")));
}

#[test]
fn close_code_5000_closes_with_1002() {
    expect_1002(&masked(true, OP_CLOSE, &close_payload(5000, b"")));
}

#[test]
fn protocol_error_after_valid_traffic_still_closes_with_1002() {
    let gw = small();
    let mut raw = gw.raw();
    raw.send_text("fine");
    assert_eq!(raw.recv_text(), "fine");
    raw.write_lossy(&encode_frame(true, 0, OP_TEXT, None, b"unmasked"));
    raw.expect_close(1002);
}

#[test]
fn one_failed_connection_does_not_disturb_another() {
    let gw = small();
    let mut good = gw.raw();
    let mut bad = gw.raw();
    bad.write_lossy(&masked(true, 0x3, b"bad"));
    bad.expect_close(1002);
    good.send_text("unaffected");
    assert_eq!(good.recv_text(), "unaffected");
}
