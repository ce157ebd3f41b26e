//! Unit tests of the embedded tenant's store: users, filters, PATCH and Bulk.

use super::*;
use serde_json::json;

const BASE: &str = "http://tenant.test/scim/v2";

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true,
    })
}

fn store_with(names: &[&str]) -> (Store, Vec<String>) {
    let mut store = Store::new(BASE, 7);
    let ids = names
        .iter()
        .map(|n| store.insert(&user(n)).unwrap())
        .collect();
    (store, ids)
}

fn ids_of(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn create_assigns_id_meta_and_defaults() {
    let mut store = Store::new(BASE, 1);
    let doc = json!({"userName": "ada", "id": "mine", "password": "secret",
        ENTERPRISE_SCHEMA: {"department": "Ops"}});
    let created = store.create(&doc).unwrap();
    let id = created["id"].as_str().unwrap();
    assert_ne!(id, "mine", "id is assigned by the server");
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "a version 4 UUID");
    assert_eq!(created["meta"]["location"], format!("{BASE}/Users/{id}"));
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(created["meta"]["version"], "W/\"1\"");
    assert_eq!(created["active"], true);
    assert!(created.get("password").is_none());
    assert_eq!(created["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
    assert_eq!(store.get(id).unwrap(), created);
}

#[test]
fn ids_are_reproducible_from_the_seed() {
    let (_, a) = store_with(&["a", "b"]);
    let (_, b) = store_with(&["a", "b"]);
    assert_eq!(a, b);
    assert_ne!(a[0], a[1]);
}

#[test]
fn user_name_is_required() {
    let mut store = Store::new(BASE, 1);
    for doc in [
        json!({}),
        json!({"userName": "  "}),
        json!({"userName": 5}),
        json!([]),
    ] {
        let err = store.create(&doc).unwrap_err();
        assert_eq!(err.status, 400, "{doc}");
    }
    let err = store.create(&json!({"name": {}})).unwrap_err();
    assert_eq!(err.scim_type, Some("invalidValue"));
    let err = store
        .create(&json!({"userName": "a", "active": "yes"}))
        .unwrap_err();
    assert_eq!(err.scim_type, Some("invalidValue"));
}

#[test]
fn user_name_is_unique_case_insensitively() {
    let (mut store, _) = store_with(&["Ada@Example.com", "ÉLODIE@exemple.fr"]);
    for dup in ["ada@example.COM", "élodie@EXEMPLE.fr"] {
        let err = store.create(&user(dup)).unwrap_err();
        assert_eq!(
            (err.status, err.scim_type),
            (409, Some("uniqueness")),
            "{dup}"
        );
    }
    // Attribute names are case-insensitive too.
    let err = store
        .create(&json!({"USERNAME": "ADA@example.com"}))
        .unwrap_err();
    assert_eq!(err.status, 409);
    assert!(store.create(&user("ada@example.org")).is_ok());
}

#[test]
fn put_replaces_and_keeps_names_unique() {
    let (mut store, ids) = store_with(&["ada", "grace"]);
    let err = store.replace("nope", &user("x")).unwrap_err();
    assert_eq!(err.status, 404);
    let err = store.replace(&ids[1], &user("ADA")).unwrap_err();
    assert_eq!((err.status, err.scim_type), (409, Some("uniqueness")));
    // Changing the case of one's own userName is not a collision.
    let replaced = store
        .replace(&ids[0], &json!({"userName": "Ada", "title": "Countess"}))
        .unwrap();
    assert_eq!(replaced["id"], ids[0].as_str());
    assert_eq!(replaced["title"], "Countess");
    assert!(
        replaced.get("emails").is_none(),
        "PUT replaces, it does not merge"
    );
    assert_eq!(replaced["meta"]["version"], "W/\"2\"");
    // The old name is free again once renamed.
    store.replace(&ids[0], &user("ada2")).unwrap();
    assert!(store.create(&user("ada")).is_ok());
}

#[test]
fn patch_replace_with_and_without_path() {
    let (mut store, ids) = store_with(&["ada"]);
    let id = &ids[0];
    let op = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    assert_eq!(store.patch(id, &op).unwrap()["active"], false);

    let op = json!({"Operations": [{"op": "Replace", "value": {
        "active": true,
        "name": {"givenName": "Augusta"},
        "name.familyName": "King",
        "emails": [{"value": "augusta@example.com"}],
        ENTERPRISE_SCHEMA: {"department": "Maths"},
        "id": "ignored",
    }}]});
    let patched = store.patch(id, &op).unwrap();
    assert_eq!(patched["active"], true);
    assert_eq!(
        patched["name"],
        json!({"givenName": "Augusta", "familyName": "King"})
    );
    assert_eq!(patched["emails"], json!([{"value": "augusta@example.com"}]));
    assert_eq!(patched[ENTERPRISE_SCHEMA]["department"], "Maths");
    assert_eq!(patched["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
    assert_eq!(patched["id"], id.as_str());

    let op = json!({"Operations": [
        {"op": "add", "path": "emails", "value": [{"value": "second@example.com"}]},
        {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Ops"},
        {"op": "remove", "path": "name.familyName"},
    ]});
    let patched = store.patch(id, &op).unwrap();
    assert_eq!(patched["emails"].as_array().unwrap().len(), 2);
    assert_eq!(patched[ENTERPRISE_SCHEMA]["department"], "Ops");
    assert_eq!(patched["name"], json!({"givenName": "Augusta"}));
}

#[test]
fn failed_patch_changes_nothing() {
    let (mut store, ids) = store_with(&["ada", "grace"]);
    let before = store.get(&ids[0]).unwrap();
    let cases = [
        (
            json!({"Operations": [{"op": "replace", "path": "active", "value": false},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "x"}]}),
            "invalidPath",
        ),
        (
            json!({"Operations": [{"op": "remove", "path": "userName"}]}),
            "invalidValue",
        ),
        (
            json!({"Operations": [{"op": "replace", "path": "id", "value": "x"}]}),
            "mutability",
        ),
        (json!({"Operations": [{"op": "remove"}]}), "noTarget"),
        (
            json!({"Operations": [{"op": "move", "path": "active"}]}),
            "invalidSyntax",
        ),
        (json!({"Operations": []}), "invalidSyntax"),
        (
            json!({"Operations": [{"op": "replace", "value": {"userName": "GRACE"}}]}),
            "uniqueness",
        ),
    ];
    for (op, scim_type) in cases {
        let err = store.patch(&ids[0], &op).unwrap_err();
        assert_eq!(err.scim_type, Some(scim_type), "{op}");
    }
    assert_eq!(store.get(&ids[0]).unwrap(), before);
    assert_eq!(
        store
            .patch("nope", &json!({"Operations": []}))
            .unwrap_err()
            .status,
        404
    );
}

#[test]
fn delete_frees_the_user_name() {
    let (mut store, ids) = store_with(&["ada"]);
    store.delete(&ids[0]).unwrap();
    assert_eq!(store.get(&ids[0]).unwrap_err().status, 404);
    assert_eq!(store.delete(&ids[0]).unwrap_err().status, 404);
    assert!(store.create(&user("ADA")).is_ok());
}

#[test]
fn filter_values_are_json_strings() {
    let names = [r#"o"neil\x"#, "zoë@exemple.fr", "ada@example.com"];
    let (store, ids) = store_with(&names);
    let cases = [
        (r#"userName eq "O\"NEIL\\x""#, 0),
        ("userName eq \"ZOË@exemple.fr\"", 1),
        (r#"userName eq "zo\u00eb@exemple.fr""#, 1),
        (r#"  USERNAME   EQ   "ada@example.com"  "#, 2),
        (
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "ada@example.com""#,
            2,
        ),
        (r#"emails.value eq "Ada@Example.com""#, 2),
    ];
    for (filter, index) in cases {
        let list = store.list(Some(filter), 1, 100).unwrap();
        assert_eq!(ids_of(&list), vec![ids[index].clone()], "{filter}");
        assert_eq!(list["totalResults"], 1);
    }
    // The client's own filter encoding is understood for every name.
    for (name, id) in names.iter().zip(&ids) {
        let filter = crate::scim::filter::user_name_eq(name);
        assert_eq!(
            ids_of(&store.list(Some(&filter), 1, 10).unwrap()),
            vec![id.clone()]
        );
    }
    let none = store.list(Some(r#"userName eq "nobody""#), 1, 10).unwrap();
    assert_eq!(none["totalResults"], 0);
    assert_eq!(none["Resources"], json!([]));
    let by_id = format!("id eq \"{}\"", ids[1]);
    assert_eq!(
        ids_of(&store.list(Some(&by_id), 1, 10).unwrap()),
        vec![ids[1].clone()]
    );
}

#[test]
fn unparsable_filters_are_invalid_filter() {
    let (store, _) = store_with(&["ada"]);
    for filter in [
        "userName eq ada",
        r#"userName eq "unterminated"#,
        r#"userName eq "a\q""#,
        r#"userName eq "a" and active eq true"#,
        r#"userName co "a""#,
        r#"nickName eq "a""#,
        "userName",
        r#"userName eq"#,
    ] {
        let err = store.list(Some(filter), 1, 10).unwrap_err();
        assert_eq!(
            (err.status, err.scim_type),
            (400, Some("invalidFilter")),
            "{filter}"
        );
    }
}

#[test]
fn list_pages_in_creation_order() {
    let names: Vec<String> = (0..5).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (store, ids) = store_with(&refs);
    let page = store.list(None, 2, 2).unwrap();
    assert_eq!(ids_of(&page), ids[1..3].to_vec());
    assert_eq!(page["totalResults"], 5);
    assert_eq!(page["startIndex"], 2);
    assert_eq!(page["itemsPerPage"], 2);
    assert_eq!(ids_of(&store.list(None, 0, 100).unwrap()), ids);
    assert_eq!(
        ids_of(&store.list(Some(""), 5, 100).unwrap()),
        ids[4..].to_vec()
    );
    assert_eq!(store.list(None, 1, 0).unwrap()["itemsPerPage"], 0);
    assert_eq!(store.snapshot().len(), 5);
}

#[test]
fn bulk_reports_each_operation() {
    let (mut store, ids) = store_with(&["existing"]);
    let request = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
    "Operations": [
        {"method": "POST", "bulkId": "op0", "path": "/Users", "data": user("new")},
        {"method": "POST", "bulkId": "op1", "path": "/Users", "data": user("EXISTING")},
        {"method": "PATCH", "bulkId": "op2", "path": format!("/Users/{}", ids[0]),
            "data": {"Operations": [{"op": "replace", "path": "active", "value": false}]}},
        {"method": "PUT", "bulkId": "op3", "path": "/Users/missing", "data": user("x")},
        {"method": "POST", "path": "/Users", "data": user("no-bulk-id")},
        {"method": "PATCH", "path": "/Users/bulkId:op0",
            "data": {"Operations": [{"op": "replace", "path": "title", "value": "New"}]}},
        {"method": "DELETE", "bulkId": "op6", "path": format!("/Users/{}", ids[0])},
        {"method": "POST", "bulkId": "op7", "path": "/Groups", "data": {}},
    ]});
    let response = store.bulk(&request, 50).unwrap();
    assert_eq!(response["schemas"], json!([BULK_RESPONSE_SCHEMA]));
    let ops = response["Operations"].as_array().unwrap();
    let statuses: Vec<&str> = ops.iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["201", "409", "200", "404", "400", "200", "204", "404"]
    );
    let new_id = store.list(Some(r#"userName eq "new""#), 1, 1).unwrap()["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ops[0]["bulkId"], "op0");
    assert_eq!(ops[0]["method"], "POST");
    assert_eq!(ops[0]["location"], format!("{BASE}/Users/{new_id}"));
    assert!(ops[0].get("response").is_none());
    assert_eq!(ops[1]["response"]["scimType"], "uniqueness");
    assert_eq!(ops[1]["response"]["status"], "409");
    assert!(ops[1].get("location").is_none());
    assert_eq!(ops[3]["location"], format!("{BASE}/Users/missing"));
    assert!(ops[4].get("bulkId").is_none());
    assert_eq!(ops[5]["location"], format!("{BASE}/Users/{new_id}"));
    assert_eq!(store.get(&new_id).unwrap()["title"], "New");
    assert_eq!(store.get(&ids[0]).unwrap_err().status, 404);
}

#[test]
fn bulk_stops_after_fail_on_errors() {
    let (mut store, _) = store_with(&["a"]);
    let request = json!({"failOnErrors": 1, "Operations": [
        {"method": "POST", "bulkId": "1", "path": "/Users", "data": user("A")},
        {"method": "POST", "bulkId": "2", "path": "/Users", "data": user("b")},
    ]});
    let response = store.bulk(&request, 50).unwrap();
    assert_eq!(response["Operations"].as_array().unwrap().len(), 1);
    assert_eq!(
        store.snapshot().len(),
        1,
        "the second operation was not applied"
    );
    let bad = json!({"failOnErrors": "x", "Operations": []});
    assert_eq!(
        store.bulk(&bad, 50).unwrap_err().scim_type,
        Some("invalidSyntax")
    );
}

#[test]
fn bulk_over_max_operations_is_413_and_not_applied() {
    let mut store = Store::new(BASE, 1);
    let ops: Vec<Value> = (0..3)
        .map(|i| json!({"method": "POST", "bulkId": format!("b{i}"), "path": "/Users", "data": user(&format!("u{i}"))}))
        .collect();
    let err = store.bulk(&json!({"Operations": ops}), 2).unwrap_err();
    assert_eq!((err.status, err.scim_type), (413, Some("tooMany")));
    assert!(store.snapshot().is_empty());
    assert_eq!(store.bulk(&json!({}), 2).unwrap_err().status, 400);
}

#[test]
fn error_documents_carry_status_as_a_string() {
    let doc = ScimError::invalid_filter("bad").to_json();
    assert_eq!(
        doc,
        json!({"schemas": [ERROR_SCHEMA], "status": "400",
        "scimType": "invalidFilter", "detail": "bad"})
    );
    assert!(ScimError::not_found("x")
        .to_json()
        .get("scimType")
        .is_none());
}

#[test]
fn timestamps_are_rfc3339_utc() {
    let at = |secs| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
}
