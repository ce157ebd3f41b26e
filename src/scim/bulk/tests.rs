//! Unit tests of Bulk encoding, chunking and the reading of BulkResponses.

use super::*;
use proptest::prelude::*;
use serde_json::json;

use crate::scim::request::Document;

fn post(key: usize) -> SubOp {
    SubOp {
        key,
        verb: Verb::Post,
        path: "/Users".into(),
        data: Document::from_value(&json!({"userName": format!("user{key}@example.com")})),
    }
}

fn put(key: usize, id: &str) -> SubOp {
    SubOp {
        key,
        verb: Verb::Put,
        path: format!("/Users/{id}").into(),
        data: Document::from_value(&json!({"userName": "x"})),
    }
}

#[test]
fn encodes_a_valid_bulk_request() {
    let ops = [post(0), put(1, "abc")];
    let refs: Vec<&SubOp> = ops.iter().collect();
    let doc: Value = serde_json::from_slice(&encode(&refs)).unwrap();
    assert_eq!(doc["schemas"][0], BULK_REQUEST);
    assert_eq!(doc["Operations"][0]["method"], "POST");
    assert_eq!(doc["Operations"][0]["bulkId"], "op0");
    assert_eq!(doc["Operations"][1]["path"], "/Users/abc");
    assert_eq!(doc["Operations"][1]["data"]["userName"], "x");
}

#[test]
fn chunks_respect_both_limits() {
    let ops: Vec<SubOp> = (0..23).map(post).collect();
    let limits = ProviderLimits {
        bulk: true,
        max_operations: 5,
        max_payload_size: 1_000_000,
        filter: true,
    };
    let chunks = chunk(&ops, &limits);
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c.len() <= 5));
    let small = ProviderLimits {
        max_payload_size: 400,
        ..limits
    };
    for c in chunk(&ops, &small) {
        let refs: Vec<&SubOp> = c.iter().map(|&i| &ops[i]).collect();
        assert!(encode(&refs).len() <= 400, "chunk of {} too large", c.len());
    }
    let flat: Vec<usize> = chunk(&ops, &small).concat();
    assert_eq!(flat, (0..23).collect::<Vec<_>>());
}

#[test]
fn status_in_every_shape() {
    for v in [
        json!("201"),
        json!(201),
        json!({"code": "201"}),
        json!({"code": 201}),
        json!("201 Created"),
    ] {
        assert_eq!(parse_status(&v), Some(201), "{v}");
    }
    assert_eq!(parse_status(&json!(null)), None);
    assert_eq!(parse_status(&json!("abc")), None);
    assert_eq!(parse_status(&json!(70000)), None);
}

#[test]
fn results_map_by_bulk_id_not_position() {
    let ops = [post(0), post(1), post(2)];
    let refs: Vec<&SubOp> = ops.iter().collect();
    // Results out of order, one missing.
    let body = json!({"Operations": [
        {"bulkId": "op2", "status": "409", "response": {"scimType": "uniqueness"}},
        {"bulkId": "op0", "status": 201, "location": "/Users/a0"},
    ]});
    let out = parse_response(body.to_string().as_bytes(), &refs, None).unwrap();
    let get = |k| out.iter().find(|(key, _)| *key == k).unwrap().1.clone();
    match get(0) {
        SubResult::Reply(r) => {
            assert_eq!(r.status, 201);
            assert_eq!(r.resource_id().as_deref(), Some("a0"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(get(1), SubResult::Transient { .. }));
    match get(2) {
        SubResult::Reply(r) => assert_eq!(r.error().0.as_deref(), Some("uniqueness")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn put_results_without_bulk_id_match_by_location() {
    let ops = [put(0, "aaa"), put(1, "bbb")];
    let refs: Vec<&SubOp> = ops.iter().collect();
    let body = json!({"Operations": [
        {"method": "PUT", "status": {"code": "200"}, "location": "https://t.example/scim/v2/Users/bbb"},
        {"method": "PUT", "status": "404", "location": "/Users/aaa"},
    ]});
    let out = parse_response(body.to_string().as_bytes(), &refs, None).unwrap();
    let status = |k| match &out.iter().find(|(key, _)| *key == k).unwrap().1 {
        SubResult::Reply(r) => r.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(0), 404);
    assert_eq!(status(1), 200);
}

#[test]
fn post_results_without_bulk_id_are_not_guessed() {
    let ops = [post(0)];
    let refs: Vec<&SubOp> = ops.iter().collect();
    let body =
        json!({"Operations": [{"method": "POST", "status": "201", "location": "/Users/zzz"}]});
    let out = parse_response(body.to_string().as_bytes(), &refs, None).unwrap();
    assert!(matches!(out[0].1, SubResult::Transient { .. }));
}

#[test]
fn unknown_and_conflicting_duplicates() {
    let ops = [post(0), post(1)];
    let refs: Vec<&SubOp> = ops.iter().collect();
    let body = json!({"Operations": [
        {"bulkId": "nope", "status": "201"},
        {"bulkId": "op0", "status": "201"},
        {"bulkId": "op0", "status": "201"},
        {"bulkId": "op1", "status": "201"},
        {"bulkId": "op1", "status": "500"},
    ]});
    let out = parse_response(body.to_string().as_bytes(), &refs, None).unwrap();
    assert!(matches!(&out[0].1, SubResult::Reply(r) if r.status == 201));
    assert!(matches!(out[1].1, SubResult::Transient { .. }));
}

#[test]
fn unreadable_bodies_are_errors() {
    let ops = [post(0)];
    let refs: Vec<&SubOp> = ops.iter().collect();
    assert_eq!(
        parse_response(b"<html>oops</html>", &refs, None),
        Err(BulkParseError::NotJson)
    );
    assert_eq!(
        parse_response(br#"{"Operations": [{"bulkId""#, &refs, None),
        Err(BulkParseError::NotJson)
    );
    assert_eq!(
        parse_response(b"{}", &refs, None),
        Err(BulkParseError::NoOperations)
    );
}

proptest! {
    #[test]
    fn encoded_len_is_the_length_encode_writes(
        key in 0usize..2_000_000,
        path in any::<String>(),
        user_name in any::<String>(),
        verb in prop_oneof![Just(Verb::Post), Just(Verb::Put), Just(Verb::Patch)],
    ) {
        let op = SubOp { key, verb, path: path.into(), data: Document::from_value(&json!({"userName": user_name})) };
        let mut out = Vec::new();
        encode_op(&op, &mut out);
        prop_assert_eq!(encoded_len(&op), out.len());
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&parsed["path"], &json!(op.path));
        let bulk_id = op.bulk_id();
        prop_assert_eq!(parsed["bulkId"].as_str(), Some(bulk_id.as_str()));
    }

    #[test]
    fn parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let ops = [post(0), put(1, "a")];
        let refs: Vec<&SubOp> = ops.iter().collect();
        let _ = parse_response(&body, &refs, None);
    }

    #[test]
    fn every_sent_op_gets_exactly_one_result(statuses in proptest::collection::vec(100u16..600, 0..8), n in 1usize..8) {
        let ops: Vec<SubOp> = (0..n).map(post).collect();
        let refs: Vec<&SubOp> = ops.iter().collect();
        let results: Vec<Value> = statuses.iter().enumerate()
            .map(|(i, s)| json!({"bulkId": format!("op{}", i % (n + 1)), "status": s.to_string()}))
            .collect();
        let out = parse_response(json!({"Operations": results}).to_string().as_bytes(), &refs, None).unwrap();
        prop_assert_eq!(out.len(), n);
        for (i, (key, _)) in out.iter().enumerate() {
            prop_assert_eq!(*key, i);
        }
    }
}
