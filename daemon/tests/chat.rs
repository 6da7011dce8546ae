//! Chat over WebSocket against the real daemon, with real WebSocket clients: identity from
//! the token, limits, slow sockets, moderation, history.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{ChatClient, ChatEvent, Daemon};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A bare TCP connection upgraded to a chat WebSocket, after the `101` status line: for
/// clients that misbehave below the WebSocket layer.
fn raw_upgrade(daemon: &Daemon, slug: &str) -> std::net::TcpStream {
    let mut raw = common::connect_from(common::new_device(), daemon.http).expect("connect");
    raw.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        raw,
        "GET /api/channels/{slug}/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("upgrade");
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).expect("response");
    assert_eq!(&head, b"HTTP/1.1 101");
    raw
}

#[test]
fn anonymous_sockets_read_and_senders_are_who_their_token_says() {
    let daemon = Daemon::start("");
    daemon.add_channel("stage");
    let minji = daemon.add_user_token("minji", "viewer");

    let mut anonymous = daemon.chat("stage", None).expect("anonymous connect");
    let (hello, history) = anonymous.hello();
    assert_eq!(hello["channel"], "stage");
    assert_eq!(hello["user"], json!(null));
    assert_eq!(hello["moderator"], false);
    assert!(history.is_empty());

    let mut member = daemon.chat("stage", Some(&minji)).expect("connect");
    let (hello, _) = member.hello();
    assert_eq!(hello["user"]["nickname"], "minji");
    let minji_id = hello["user"]["id"].clone();

    // The client claims to be someone else: the server ignores it.
    member.send(json!({
        "type": "chat", "text": "안녕하세요 <b>hi</b>",
        "nickname": "admin", "user": {"id": 1, "nickname": "admin"}, "id": 1
    }));
    for socket in [&mut anonymous, &mut member] {
        let said = socket.next_of("chat", WAIT);
        assert_eq!(said["text"], "안녕하세요 <b>hi</b>", "text is sent as text");
        assert_eq!(said["user"]["nickname"], "minji");
        assert_eq!(said["user"]["id"], minji_id);
        assert_eq!(said["user"]["role"], "viewer");
        assert!(said["id"].as_u64().is_some_and(|id| id > 1));
        assert!(said["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    }

    anonymous.send(json!({"type": "chat", "text": "let me in"}));
    let refused = anonymous.next_of("error", WAIT);
    assert_eq!(refused["code"], "unauthenticated");
    member.assert_no("chat", Duration::from_millis(300));

    // Garbage is answered, not fatal.
    anonymous.send(json!({"type": "shout"}));
    assert_eq!(anonymous.next_of("error", WAIT)["code"], "bad_frame");
    anonymous
        .ws
        .send(tungstenite::Message::binary(vec![0xff, 0x00]))
        .expect("binary");
    assert_eq!(anonymous.next_of("error", WAIT)["code"], "bad_frame");
    member.send(json!({"type": "chat", "text": "still here"}));
    assert_eq!(anonymous.next_of("chat", WAIT)["text"], "still here");

    // Viewer counts reach the room.
    let count = |socket: &mut ChatClient| socket.next_of("viewers", WAIT)["count"].clone();
    let mut third = daemon.chat("stage", None).expect("connect");
    third.hello();
    let mut seen = count(&mut anonymous);
    while seen != 3 {
        seen = count(&mut anonymous);
    }
    drop(third);
    assert_eq!(count(&mut anonymous), 2);
}

#[test]
fn what_is_not_a_chat_socket_is_refused_clearly() {
    let daemon = Daemon::start("");
    daemon.add_channel("stage");
    let missing = daemon.chat("ghost", None).err().expect("refused");
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "not_found")
    );
    let plain = daemon.get("/api/channels/stage/chat");
    assert_eq!(
        (plain.status, plain.error_code().as_str()),
        (426, "websocket_required")
    );
    let forged = daemon
        .chat("stage", Some("not.a.token"))
        .err()
        .expect("refused");
    assert_eq!(
        (forged.status, forged.error_code().as_str()),
        (401, "invalid_token")
    );

    // Garbage bytes after a real upgrade: that socket is closed, the room carries on.
    let mut raw = raw_upgrade(&daemon, "stage");
    raw.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(4096))
        .expect("garbage");
    let mut sink = Vec::new();
    // The server closes the connection: the read ends (EOF or reset), it does not hang.
    let _ = raw.read_to_end(&mut sink);

    let token = daemon.add_user_token("minji", "viewer");
    let mut member = daemon.chat("stage", Some(&token)).expect("connect");
    member.hello();
    member.send(json!({"type": "chat", "text": "fine"}));
    assert_eq!(member.next_of("chat", WAIT)["text"], "fine");
}

#[test]
fn auth_frames_accept_good_tokens_and_refuse_tampered_expired_and_revoked_ones() {
    let daemon = Daemon::start("[auth]\naccess_token_seconds = 2\n");
    daemon.add_channel("stage");
    let login = daemon.add_user("minji", "viewer");
    let access = login["access_token"].as_str().expect("access").to_string();

    let mut socket = daemon.chat("stage", None).expect("connect");
    socket.hello();
    let mut tampered: Vec<String> = access.split('.').map(String::from).collect();
    tampered[1] = tampered[1].chars().rev().collect();
    socket.send(json!({"type": "auth", "token": tampered.join(".")}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "invalid_token");
    socket.send(json!({"type": "chat", "text": "hi"}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "unauthenticated");

    socket.send(json!({"type": "auth", "token": access}));
    let authenticated = socket.next_of("authenticated", WAIT);
    assert_eq!(authenticated["user"]["nickname"], "minji");
    socket.send(json!({"type": "chat", "text": "hi"}));
    assert_eq!(socket.next_of("chat", WAIT)["user"]["nickname"], "minji");

    // The token expires under an open socket: sending stops until a fresh auth frame.
    let expired_at = Instant::now() + Duration::from_secs(3);
    while Instant::now() < expired_at {
        socket.assert_no("error", Duration::from_millis(200));
    }
    socket.send(json!({"type": "chat", "text": "late"}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "token_expired");
    socket.send(json!({"type": "auth", "token": access}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "token_expired");
    let expired_header = daemon.chat("stage", Some(&access)).err().expect("refused");
    assert_eq!(expired_header.error_code(), "token_expired");

    let refresh = |token: &serde_json::Value| {
        daemon.post("/api/auth/refresh", json!({"refresh_token": token}), None)
    };
    let renewed = refresh(&login["refresh_token"]).json();
    socket.send(json!({"type": "auth", "token": renewed["access_token"]}));
    socket.next_of("authenticated", WAIT);
    socket.send(json!({"type": "chat", "text": "back"}));
    assert_eq!(socket.next_of("chat", WAIT)["text"], "back");

    // Refresh-token reuse revokes the family: its access tokens stop working for chat.
    // (The session moves on first: an old token presented again before that, within
    // seconds, is the same client racing itself.)
    assert_eq!(refresh(&renewed["refresh_token"]).status, 200);
    assert_eq!(
        refresh(&login["refresh_token"]).error_code(),
        "refresh_token_reused"
    );
    socket.send(json!({"type": "auth", "token": renewed["access_token"]}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "session_revoked");
    let revoked = daemon
        .chat("stage", renewed["access_token"].as_str())
        .err()
        .expect("refused");
    assert_eq!(
        (revoked.status, revoked.error_code().as_str()),
        (401, "session_revoked")
    );

    // Logging out does the same.
    let other = daemon.post(
        "/api/auth/login",
        json!({"username": "minji", "password": "correct horse battery"}),
        None,
    );
    let other = other.json()["access_token"]
        .as_str()
        .expect("access")
        .to_string();
    assert_eq!(
        daemon
            .post("/api/auth/logout", json!({}), Some(&other))
            .status,
        204
    );
    socket.send(json!({"type": "auth", "token": other}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "session_revoked");
}

#[test]
fn length_and_rate_limits_hold_and_explain_themselves() {
    let daemon = Daemon::start("");
    daemon.add_channel("stage");
    let token = daemon.add_user_token("minji", "viewer");
    let mut chatter = daemon.chat("stage", Some(&token)).expect("connect");
    chatter.hello();
    let mut reader = daemon.chat("stage", None).expect("connect");
    reader.hello();

    chatter.send(json!({"type": "chat", "text": "가".repeat(301)}));
    let long = chatter.next_of("error", WAIT);
    assert_eq!(long["code"], "too_long");
    assert!(long["message"].as_str().is_some_and(|m| m.contains("300")));
    chatter.send(json!({"type": "chat", "text": " \n\t "}));
    assert_eq!(chatter.next_of("error", WAIT)["code"], "empty");

    // 300 characters exactly is fine; then 3 messages per 2 s, the fourth mutes.
    chatter.send(json!({"type": "chat", "text": "가".repeat(300)}));
    for n in 1..3 {
        chatter.send(json!({"type": "chat", "text": format!("message {n}")}));
    }
    chatter.send(json!({"type": "chat", "text": "one too many"}));
    let limited = chatter.next_of("error", WAIT);
    assert_eq!(limited["code"], "rate_limited");
    assert_eq!(limited["retry_after"], 10);
    for expected in ["가".repeat(300), "message 1".into(), "message 2".into()] {
        assert_eq!(reader.next_of("chat", WAIT)["text"], expected.as_str());
    }
    chatter.send(json!({"type": "chat", "text": "still muted"}));
    let muted = chatter.next_of("error", WAIT);
    assert_eq!(muted["code"], "rate_limited");
    assert!(muted["retry_after"]
        .as_u64()
        .is_some_and(|s| (1..=10).contains(&s)));
    reader.assert_no("chat", Duration::from_millis(300));
}

#[test]
fn a_new_socket_gets_the_last_fifty_messages_in_order() {
    let daemon = Daemon::start("[chat]\nrate_messages = 1000\n");
    daemon.add_channel("stage");
    let token = daemon.add_user_token("minji", "viewer");
    let mut chatter = daemon.chat("stage", Some(&token)).expect("connect");
    chatter.hello();
    for n in 0..60 {
        chatter.send(json!({"type": "chat", "text": format!("line {n}")}));
    }
    let mut last = json!(null);
    while last["text"] != "line 59" {
        last = chatter.next_of("chat", WAIT);
    }
    let mut late = daemon.chat("stage", None).expect("connect");
    let (hello, history) = late.hello();
    assert_eq!(hello["history"], 50);
    let texts: Vec<_> = history
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    let expected: Vec<String> = (10..60).map(|n| format!("line {n}")).collect();
    assert_eq!(texts, expected);
    assert_eq!(history.last().expect("last")["id"], last["id"]);
}

#[test]
fn a_stalled_socket_is_dropped_while_the_room_keeps_receiving() {
    // Long messages and a loose rate so the test can fill a stalled client's TCP buffers
    // quickly; a short write timeout so it is noticed quickly.
    let daemon = Daemon::start(
        "[chat]\nmax_chars = 4000\nrate_messages = 100000\nrate_seconds = 1.0\n\
         write_timeout_seconds = 2.0\n",
    );
    daemon.add_channel("stage");
    let token = daemon.add_user_token("minji", "viewer");
    let mut stalled = daemon.chat("stage", None).expect("connect");
    stalled.hello();
    let mut healthy = daemon.chat("stage", None).expect("connect");
    healthy.hello();
    let mut sender = daemon.chat("stage", Some(&token)).expect("connect");
    sender.hello();

    // ~24 MB through the room: more than loopback TCP buffers hold for the stalled reader.
    const MESSAGES: usize = 6000;
    let reader = std::thread::spawn(move || {
        let mut received = 0;
        let mut viewers = json!(null);
        while received < MESSAGES {
            let frame = healthy
                .next(WAIT)
                .expect("the healthy socket keeps receiving");
            if frame["type"] == "viewers" {
                viewers = frame["count"].clone();
            }
            if frame["type"] == "chat" {
                let text = frame["text"].as_str().expect("text");
                assert!(
                    text.starts_with(&format!("{received:05} ")),
                    "in order, none lost"
                );
                received += 1;
            }
        }
        (healthy, viewers)
    });
    let filler = "x".repeat(3990);
    // The sender reads its own echo before sending the next, as a browser keeps reading:
    // a client that only sent would itself be a stalled reader.
    for n in 0..MESSAGES {
        let text = format!("{n:05} {filler}");
        sender.send(json!({"type": "chat", "text": text}));
        assert_eq!(sender.next_of("chat", WAIT)["text"], text.as_str());
    }
    let (mut healthy, mut count) = reader.join().expect("reader");

    // The room announces that the stalled socket is gone.
    let deadline = Instant::now() + WAIT;
    while count != 2 {
        assert!(
            Instant::now() < deadline,
            "stalled socket still counted: {count}"
        );
        count = healthy.next_of("viewers", WAIT)["count"].clone();
    }
    // And the stalled client, reading at last, finds its stream cut short.
    let mut chats = 0;
    loop {
        match stalled.next_event(WAIT) {
            ChatEvent::Frame(frame) if frame["type"] == "chat" => chats += 1,
            ChatEvent::Frame(_) => {}
            ChatEvent::Quiet => panic!("the stalled socket was not closed"),
            ChatEvent::Closed(_) => break,
        }
    }
    assert!(
        chats < MESSAGES,
        "the stalled socket got everything: {chats}"
    );
    assert!(daemon.logged("chat socket closed"));
}

#[test]
fn moderation_reaches_every_socket_and_survives_a_restart() {
    let mut daemon = Daemon::start("");
    let streamer = daemon.add_streamer_channel("djay", "stage");
    let admin = daemon.add_user_token("venue", "admin");
    let troll = daemon.add_user_token("troll", "viewer");
    let fan = daemon.add_user_token("fan", "viewer");
    let rival = daemon.add_user_token("rival", "streamer");

    let mut owner = daemon.chat("stage", Some(&streamer)).expect("connect");
    assert_eq!(owner.hello().0["moderator"], true);
    let mut watcher = daemon.chat("stage", None).expect("connect");
    watcher.hello();
    let mut trolling = daemon.chat("stage", Some(&troll)).expect("connect");
    let troll_id = trolling.hello().0["user"]["id"].clone();
    let mut fanning = daemon.chat("stage", Some(&fan)).expect("connect");
    let (hello, _) = fanning.hello();
    assert_eq!(hello["moderator"], false);
    let fan_id = hello["user"]["id"].clone();

    trolling.send(json!({"type": "chat", "text": "spam"}));
    let spam = watcher.next_of("chat", WAIT)["id"].clone();

    // Not a moderator: a viewer, or another channel's streamer.
    fanning.send(json!({"type": "delete", "id": spam}));
    assert_eq!(fanning.next_of("error", WAIT)["code"], "forbidden");
    let mut other = daemon.chat("stage", Some(&rival)).expect("connect");
    other.hello();
    other.send(json!({"type": "ban", "user_id": fan_id}));
    assert_eq!(other.next_of("error", WAIT)["code"], "forbidden");

    // The owner deletes: every socket hears it.
    owner.send(json!({"type": "delete", "id": spam}));
    for socket in [
        &mut owner,
        &mut watcher,
        &mut trolling,
        &mut fanning,
        &mut other,
    ] {
        assert_eq!(socket.next_of("deleted", WAIT)["id"], spam);
    }

    // A timeout: announced to all, and the user cannot chat until it ends.
    trolling.send(json!({"type": "chat", "text": "more spam"}));
    let more = watcher.next_of("chat", WAIT)["id"].clone();
    owner.send(json!({"type": "timeout", "user_id": troll_id, "seconds": 60}));
    assert_eq!(
        watcher.next_of("deleted", WAIT)["id"],
        more,
        "their lines go too"
    );
    let notice = watcher.next_of("system", WAIT);
    assert_eq!(notice["text"], "troll was timed out for 60 s");
    assert_eq!(fanning.next_of("system", WAIT)["text"], notice["text"]);
    trolling.send(json!({"type": "chat", "text": "let me talk"}));
    let muted = trolling.next_of("error", WAIT);
    assert_eq!(muted["code"], "timed_out");
    assert!(muted["retry_after"]
        .as_u64()
        .is_some_and(|s| (55..=60).contains(&s)));
    owner.send(json!({"type": "timeout", "user_id": troll_id, "seconds": 0}));
    assert_eq!(owner.next_of("error", WAIT)["code"], "bad_duration");

    // An admin bans; admins and the owner cannot be banned.
    let mut venue = daemon.chat("stage", Some(&admin)).expect("connect");
    let admin_id = venue.hello().0["user"]["id"].clone();
    venue.send(json!({"type": "ban", "user_id": fan_id}));
    assert_eq!(
        watcher.next_of("system", WAIT)["text"],
        "fan was banned from the chat"
    );
    fanning.send(json!({"type": "chat", "text": "why"}));
    assert_eq!(fanning.next_of("error", WAIT)["code"], "banned");
    owner.send(json!({"type": "ban", "user_id": admin_id}));
    assert_eq!(owner.next_of("error", WAIT)["code"], "protected");
    owner.send(json!({"type": "ban", "user_id": 987_654}));
    assert_eq!(owner.next_of("error", WAIT)["code"], "no_such_user");

    // The ban is kept in the store: it holds after a crash and restart.
    drop((owner, watcher, trolling, fanning, other, venue));
    daemon.crash_and_restart();
    let fan = daemon.login("fan");
    let mut fanning = daemon.chat("stage", Some(&fan)).expect("connect");
    fanning.hello();
    fanning.send(json!({"type": "chat", "text": "back?"}));
    assert_eq!(fanning.next_of("error", WAIT)["code"], "banned");
    let streamer = daemon.login("djay");
    let mut owner = daemon.chat("stage", Some(&streamer)).expect("connect");
    owner.hello();
    owner.send(json!({"type": "unban", "user_id": fan_id}));
    owner.assert_no("error", Duration::from_millis(300));
    fanning.send(json!({"type": "chat", "text": "thanks"}));
    assert_eq!(owner.next_of("chat", WAIT)["text"], "thanks");
}

#[test]
fn shutdown_says_goodbye_to_every_socket() {
    let mut daemon = Daemon::start("");
    daemon.add_channel("stage");
    let mut sockets: Vec<ChatClient> = (0..3)
        .map(|_| {
            let mut socket = daemon.chat("stage", None).expect("connect");
            socket.hello();
            socket
        })
        .collect();
    assert!(daemon.terminate().is_some_and(|s| s.success()));
    for socket in &mut sockets {
        loop {
            match socket.next_event(WAIT) {
                ChatEvent::Frame(_) => {}
                ChatEvent::Closed(close) => {
                    assert_eq!(close.map(|(code, _)| code), Some(1001), "going away");
                    break;
                }
                ChatEvent::Quiet => panic!("no close frame"),
            }
        }
    }
}

#[test]
fn logging_out_silences_an_open_socket_at_once() {
    let daemon = Daemon::start("[chat]\nrate_messages = 100\n");
    daemon.add_channel("stage");
    let access = daemon.add_user_token("minji", "viewer");
    let mut socket = daemon.chat("stage", Some(&access)).expect("connect");
    socket.hello();
    socket.send(json!({"type": "chat", "text": "before"}));
    assert_eq!(socket.next_of("chat", WAIT)["text"], "before");
    assert_eq!(
        daemon
            .post("/api/auth/logout", json!({}), Some(&access))
            .status,
        204
    );

    // The very next message is refused: sessions are checked per message.
    socket.send(json!({"type": "chat", "text": "after"}));
    let refused = socket.next_of("error", WAIT);
    assert_eq!(refused["code"], "session_revoked");
    socket.send(json!({"type": "chat", "text": "again"}));
    assert_eq!(socket.next_of("error", WAIT)["code"], "unauthenticated");
}

#[test]
fn a_half_open_socket_that_never_answers_pings_is_closed() {
    let daemon = Daemon::start("[chat]\nping_seconds = 0.5\n");
    daemon.add_channel("stage");
    let mut watcher = daemon.chat("stage", None).expect("connect");
    watcher.hello();
    // A client that upgrades and then goes silent: it never reads, never pongs.
    let _silent = raw_upgrade(&daemon, "stage");
    let mut count = json!(0);
    while count != 2 {
        count = watcher.next_of("viewers", WAIT)["count"].clone();
    }
    // The watcher answers pings (tungstenite does, as browsers do) and stays; the silent
    // one is dropped after two ping intervals.
    let started = Instant::now();
    while count != 1 {
        count = watcher.next_of("viewers", WAIT)["count"].clone();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    watcher.assert_no("viewers", Duration::from_secs(2));
    assert!(daemon.logged("end=Silent"));
}

#[test]
fn a_socket_flooding_frames_is_closed_and_the_room_is_not() {
    let daemon = Daemon::start("");
    daemon.add_channel("stage");
    let token = daemon.add_user_token("minji", "viewer");
    let mut flooder = daemon.chat("stage", None).expect("connect");
    flooder.hello();
    for _ in 0..200 {
        if flooder
            .ws
            .send(tungstenite::Message::text(r#"{"type":"chat","text":"x"}"#))
            .is_err()
        {
            break;
        }
    }
    let close = loop {
        match flooder.next_event(WAIT) {
            ChatEvent::Frame(frame) if frame["type"] == "error" => {
                assert_eq!(frame["code"], "unauthenticated");
            }
            ChatEvent::Frame(_) => {} // viewer counts
            ChatEvent::Closed(close) => break close,
            ChatEvent::Quiet => panic!("the flooding socket was not closed"),
        }
    };
    assert_eq!(close, Some((1008, "too many frames".to_string())));
    let mut member = daemon.chat("stage", Some(&token)).expect("connect");
    member.hello();
    member.send(json!({"type": "chat", "text": "calm"}));
    assert_eq!(member.next_of("chat", WAIT)["text"], "calm");
}
