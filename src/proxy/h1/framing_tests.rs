use super::*;

fn head(text: &str) -> Result<Parsed, FramingError> {
    parse_head(&mut BytesMut::from(text), &Method::POST, MAX_HEAD)
}

fn final_head(text: &str) -> Head {
    match head(text) {
        Ok(Parsed::Final(head)) => head,
        other => panic!("not a final head: {other:?}"),
    }
}

fn framing_of(text: &str) -> Result<Framing, FramingError> {
    match head(text)? {
        Parsed::Final(head) => Ok(head.framing),
        other => panic!("not a final head: {other:?}"),
    }
}

#[test]
fn a_head_is_taken_off_the_buffer_and_its_body_stays() {
    let mut buf =
        BytesMut::from("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
    let Ok(Parsed::Final(head)) = parse_head(&mut buf, &Method::POST, MAX_HEAD) else { panic!("no head") };
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-type"], "application/json");
    assert_eq!(head.framing, Framing::Length(2));
    assert!(head.keep_alive);
    assert_eq!(&buf[..], b"{}");
}

#[test]
fn a_partial_head_waits_and_an_endless_one_is_refused() {
    assert!(matches!(head("HTTP/1.1 200 OK\r\ncontent-le"), Ok(Parsed::Partial)));
    let endless = format!("HTTP/1.1 200 OK\r\nx-long: {}", "a".repeat(MAX_HEAD));
    assert!(matches!(head(&endless), Err(FramingError::HeadTooLarge)));
    let many: String = (0..=MAX_FIELDS).map(|at| format!("x-{at}: 1\r\n")).collect();
    assert!(matches!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Err(FramingError::TooManyFields)));
}

#[test]
fn interim_answers_are_skipped_and_switching_protocols_is_refused() {
    let mut buf =
        BytesMut::from("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    assert!(matches!(parse_head(&mut buf, &Method::POST, MAX_HEAD), Ok(Parsed::Interim(_))));
    assert!(matches!(
        parse_head(&mut buf, &Method::POST, MAX_HEAD),
        Ok(Parsed::Final(Head { framing: Framing::Empty, .. }))
    ));
    assert!(buf.is_empty());
    assert!(matches!(
        head("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
        Err(FramingError::Switched)
    ));
}

#[test]
fn malformed_heads_are_refused() {
    for bad in [
        "HTTP/1.1 200 OK\r\nbad field: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-space : a\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-nul: a\0b\r\n\r\n",
    ] {
        assert!(head(bad).is_err(), "{bad:?} was read");
    }
}

#[test]
fn a_body_ends_where_the_rfc_says_and_nowhere_ambiguous() {
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").ok(),
        Some(Framing::Chunked)
    );
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\ntransfer-encoding:  Chunked \r\n\r\n").ok(),
        Some(Framing::Chunked)
    );
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5, 5\r\n\r\n").ok(),
        Some(Framing::Length(5))
    );
    assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n").ok(), Some(Framing::Close));
    assert_eq!(framing_of("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n").ok(), Some(Framing::Empty));
    assert_eq!(
        framing_of("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n").ok(),
        Some(Framing::Empty)
    );
    let Ok(Parsed::Final(to_head)) = parse_head(
        &mut BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"),
        &Method::HEAD,
        MAX_HEAD,
    ) else {
        panic!("no head")
    };
    assert_eq!(to_head.framing, Framing::Empty);
    for bad in [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, \r\n\r\n",
        "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
    ] {
        assert!(framing_of(bad).is_err(), "{bad:?} was framed");
    }
}

#[test]
fn only_a_plain_http11_answer_keeps_its_connection() {
    assert!(final_head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
    assert!(
        !final_head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive, Close\r\n\r\n")
            .keep_alive
    );
    assert!(!final_head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n").keep_alive);
    assert!(!final_head("HTTP/1.1 200 OK\r\n\r\n").keep_alive);
}

/// Decodes `wire` fed in pieces of `step` bytes: the data, whether the
/// end was found, and how many bytes of `wire` follow it.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), FramingError> {
    let mut decoder = Chunked::default();
    let (mut data, mut buf, mut fed) = (Vec::new(), BytesMut::new(), 0);
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf)? {
                Step::Data(bytes) => data.extend_from_slice(&bytes),
                Step::More => break,
                Step::Done => return Ok((data, true, buf.len() + wire.len() - fed)),
            }
        }
    }
    Ok((data, false, buf.len()))
}

#[test]
fn chunks_decode_whatever_the_pieces_they_arrive_in() -> Result<(), FramingError> {
    let wire = b"5\r\nhello\r\n1;name=\"v\"\r\n \r\nA \t;x\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
    for step in [1, 2, 3, 7, wire.len()] {
        let (data, ended, left) = dechunk(wire, step)?;
        assert_eq!(data, b"hello 0123456789", "in pieces of {step}");
        assert!(ended);
        assert_eq!(left, 4, "what follows the body stays in the buffer");
    }
    let (data, ended, _) = dechunk(b"3\r\nabc\r\n", 1)?;
    assert_eq!((data.as_slice(), ended), (&b"abc"[..], false));
    Ok(())
}

#[test]
fn malformed_chunks_are_refused() {
    for bad in [
        &b"\r\n"[..],
        b"g\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"-5\r\n",
        b"5 5\r\n",
        b"1;a\nb\r\n",
        b"1;a\x00\r\n",
        b"0\r\nx: 1\n\r\n",
        b"0\r\n\n",
        b"10000000000000000\r\n",
    ] {
        assert!(dechunk(bad, 1).is_err(), "{:?} was decoded", String::from_utf8_lossy(bad));
    }
}

#[test]
fn extensions_and_trailers_are_bounded() -> Result<(), FramingError> {
    let extension = format!("1;{}\r\na\r\n", "e".repeat(MAX_EXTENSIONS / 2));
    let wire = format!("{extension}{extension}{extension}0\r\n\r\n");
    assert!(matches!(dechunk(wire.as_bytes(), 4096), Err(FramingError::ExtensionsTooLong)));
    for filler in
        [format!("0{}5", "0".repeat(MAX_EXTENSIONS)), format!("5{}", " ".repeat(MAX_EXTENSIONS + 1))]
    {
        let wire = format!("{filler}\r\nhello\r\n0\r\n\r\n");
        assert!(matches!(dechunk(wire.as_bytes(), 4096), Err(FramingError::ExtensionsTooLong)));
    }
    let (data, ended, _) = dechunk(b"0005 \t;x\r\nhello\r\n00\r\n\r\n", 1)?;
    assert_eq!((data.as_slice(), ended), (&b"hello"[..], true));
    let trailer = format!("x: {}\r\n", "t".repeat(1024));
    let wire = format!("0\r\n{}\r\n", trailer.repeat(MAX_TRAILERS / 1024 + 1));
    assert!(matches!(dechunk(wire.as_bytes(), 4096), Err(FramingError::TrailersTooLong)));
    Ok(())
}

#[test]
fn a_head_ends_at_its_first_blank_line_wherever_a_search_resumes() {
    let head = b"HTTP/1.1 200 OK\r\na: 1\r\n\r\nbody";
    for from in 0..head.len() - 4 {
        assert_eq!(blank_line(head, from.min(23)), Some(25), "from {from}");
    }
    assert_eq!(blank_line(b"HTTP/1.1 200 OK\na: 1\n\nbody", 0), Some(22));
    assert_eq!(blank_line(b"HTTP/1.1 200 OK\r\na: 1\r\n\r", 0), None);
    assert_eq!(blank_line(b"HTTP/1.1 200 OK\r\na: 1\r\n", 0), None);
    assert_eq!(blank_line(b"", 5), None);
}

#[test]
fn empty_lines_before_a_head_are_skipped_as_httparse_skips_them() {
    for (text, skipped, left) in [
        ("\r\n\n\r\nHTTP/1.1", 5, "HTTP/1.1"),
        ("HTTP/1.1", 0, "HTTP/1.1"),
        ("\n\r", 1, "\r"),
        ("\rHTTP", 0, "\rHTTP"),
    ] {
        let mut buf = BytesMut::from(text);
        assert_eq!(leading_empty_lines(&mut buf), skipped, "{text:?}");
        assert_eq!(&buf[..], left.as_bytes());
    }
}

#[test]
fn known_names_are_read_in_any_case_exactly_as_the_parser_reads_them() {
    let known = [
        &KNOWN_4[..],
        &KNOWN_6[..],
        &KNOWN_10[..],
        &KNOWN_12[..],
        &KNOWN_13[..],
        &KNOWN_14[..],
        &KNOWN_15[..],
        &KNOWN_17[..],
        &KNOWN_20[..],
    ];
    for (spelling, name) in known.concat() {
        assert_eq!(name.as_str().as_bytes(), spelling, "a known name spelled otherwise than it is");
        let shouted = spelling.to_ascii_uppercase();
        assert_eq!(known_name(&shouted).as_ref(), Some(&name));
        assert_eq!(HeaderName::from_bytes(&shouted).ok().as_ref(), Some(&name));
    }
    // Every other token byte in place of each byte of each known name:
    // found only when the parser would read the same name.
    let token = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    for (spelling, name) in known.concat() {
        for at in 0..spelling.len() {
            for byte in (0..=255u8).filter(|byte| token(*byte)) {
                let mut raw = spelling.to_vec();
                raw[at] = byte;
                let parsed = HeaderName::from_bytes(&raw).ok();
                assert_eq!(known_name(&raw).is_some(), parsed.as_ref() == Some(&name), "{raw:?}");
                if let Some(found) = known_name(&raw) {
                    assert_eq!(Some(found), parsed);
                }
            }
        }
    }
    let head = final_head(
        "HTTP/1.1 200 OK\r\nMCP-Session-ID: a\r\nContent_Type: b\r\nCONTENT-LENGTH: 0\r\nX-Other: c\r\n\r\n",
    );
    assert_eq!(head.headers["mcp-session-id"], "a");
    assert_eq!(head.headers["content_type"], "b");
    assert!(head.headers.get(header::CONTENT_TYPE).is_none());
    assert_eq!(head.headers["x-other"], "c");
    assert_eq!(head.framing, Framing::Length(0));
}

/// The blank line's definition, a line at a time.
fn first_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    let rest = buf.get(start..)?;
    (0..rest.len()).filter(|&at| rest[at] == b'\n').find_map(|at| match rest.get(at + 1..at + 3) {
        Some([b'\n', _]) => Some(start + at + 2),
        Some([b'\r', b'\n']) => Some(start + at + 3),
        None if rest.get(at + 1) == Some(&b'\n') => Some(start + at + 2),
        _ => None,
    })
}

proptest::proptest! {
    #[test]
    fn the_blank_line_search_finds_the_first_blank_line(
        pieces in proptest::collection::vec(proptest::sample::select(vec![
            &b"\n"[..], b"\r", b"\r\n", b"\n\r", b"a", b"ab: c", b"\n\n", b"\r\n\r\n", b"\n\r\n",
        ]), 0..30),
        from in 0usize..40,
    ) {
        let buf = pieces.concat();
        proptest::prop_assert_eq!(blank_line(&buf, from), first_blank_line(&buf, from), "{:?} from {}", String::from_utf8_lossy(&buf), from);
    }
}
