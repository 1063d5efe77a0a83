//! The published schema of netladder's JSON records (`schema/netladder-events.v1.schema.json`)
//! and the check every JSON line the harness reads goes through, so that the schema and the
//! output cannot drift apart.

use std::sync::OnceLock;

use serde_json::Value;

/// The schema file, built into the test binaries.
pub const SCHEMA_TEXT: &str = include_str!("../../schema/netladder-events.v1.schema.json");

/// The schema, compiled once per test binary. A schema that does not compile fails every test
/// that reads a line, with the reason.
fn validator() -> &'static jsonschema::Validator {
    static COMPILED: OnceLock<jsonschema::Validator> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA_TEXT)
            .unwrap_or_else(|e| panic!("schema/netladder-events.v1.schema.json is not JSON: {e}"));
        jsonschema::draft202012::new(&schema).unwrap_or_else(|e| {
            panic!("schema/netladder-events.v1.schema.json does not compile: {e}")
        })
    })
}

/// Checks one record (a `watch --json` line, or the `hooks --json` object) against the schema:
/// the error says every way it does not match, each with where in the record.
pub fn check_record(record: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator()
        .iter_errors(record)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{} {e}", if at.is_empty() { "/" } else { at.as_str() })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Parses `text` as one record and checks it; panics with the text and the reason when it is
/// not JSON or does not match. For the `--json` outputs tests read without [`crate::Watch`].
pub fn parse_record(text: &str) -> Value {
    let value: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("netladder printed a line that is not JSON ({e}): {text}"));
    if let Err(why) = check_record(&value) {
        panic!("netladder printed a record the schema does not allow ({why}): {text}");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failure() -> Value {
        json!({
            "schema": "netladder/v1", "type": "failure", "time": "2026-12-04T13:01:37.123Z",
            "code": "021", "title": "connection refused", "layer": "application",
            "cause": "no_listener", "summary": "nothing listens on 10.0.0.2:9",
            "errno": "ECONNREFUSED", "pid": 42, "tid": 42, "comm": "curl", "cgroup": 1,
            "netns": 4026531840u64, "src": "10.0.0.1:50000", "dst": "10.0.0.2:9",
            "duration_ms": 0, "evidence": ["a reset"], "next": ["ss -ltn"], "count": 1,
            "name": null, "cgroup_path": "/user.slice", "container": null, "pod": null
        })
    }

    fn stats() -> Value {
        let mut records = serde_json::Map::new();
        for k in [
            "written",
            "read",
            "lost",
            "unread",
            "reported",
            "repeats",
            "merged",
            "context",
            "unclassified",
            "malformed",
            "filtered",
            "dropped",
            "held",
        ] {
            records.insert(k.into(), json!(0));
        }
        json!({
            "schema": "netladder/v1", "type": "stats", "final": true, "events": 3,
            "aggregated": 0, "lost": 0, "skipped_runs": 0, "failures_reported": 1,
            "unclassified": 0, "conn_map_full": 0, "drop_map_full": 0, "malformed": 0,
            "dns_malformed": 0, "unwritten": 0, "enrich_skipped": 0, "records": records
        })
    }

    fn rejected(v: &Value) -> String {
        check_record(v).expect_err(&format!("must not validate: {v}"))
    }

    #[test]
    fn hand_made_records_that_match() {
        check_record(&failure()).unwrap();
        check_record(&stats()).unwrap();
        let mut v6 = failure();
        v6["src"] = json!(null);
        v6["dst"] = json!("[fe80::1%2]:443");
        v6["errno"] = json!(null);
        v6["user"] = json!("alice");
        v6["container"] = json!({"runtime": null, "id": "a".repeat(64), "name": null});
        v6["pod"] = json!({"uid": "u", "qos": "besteffort", "namespace": null, "name": null});
        check_record(&v6).unwrap();
        let mut queue = failure();
        queue["code"] = json!("023");
        queue["cause"] = json!("accept_queue_full");
        queue["side"] = json!("server");
        queue["listener"] = json!({
            "addr": "10.0.0.2:80", "pid": 0, "comm": "?", "netns": 1, "recv_q": 5,
            "backlog": 4, "listen_overflows": null, "listen_drops": null,
            "syn_queue_drops": null, "syn_queue_cookies": null, "window_ms": null
        });
        check_record(&queue).unwrap();
        check_record(&json!({
            "schema": "netladder/v1", "type": "warning", "time": "2026-12-04T13:01:37.123Z",
            "code": "028", "title": "cannot assign requested address", "layer": "address",
            "netns": 1, "dst": "10.0.0.2:80", "time_wait": 900, "port_range": [32768, 60999],
            "summary": "s", "next": []
        }))
        .unwrap();
        let hook = json!({
            "program": "kfree_skb", "hook": "tp_btf/kfree_skb", "optional": true,
            "status": "refused", "reason": "no BTF", "needs": "5.17", "without": "drops",
            "lost": "drop reasons", "cost": "low", "cost_means": "per drop",
            "role": "degrades", "opt_in": false, "requires": ["drop reasons"],
            "uprobe_multi": false
        });
        check_record(&json!({
            "schema": "netladder/v1", "type": "hooks", "hooks": [hook], "degraded": ["x"],
            "tls_coverage": "tls (#025): ..."
        }))
        .unwrap();
    }

    #[test]
    fn hand_made_records_that_do_not_match() {
        // No version, another version, an unknown type.
        let mut v = failure();
        v.as_object_mut().unwrap().remove("schema");
        assert!(rejected(&v).contains("schema"), "{}", rejected(&v));
        v["schema"] = json!("netladder/v2");
        rejected(&v);
        rejected(&json!({"schema": "netladder/v1", "type": "debug"}));
        // A cause, code or layer outside the ladder.
        for (field, bad) in [
            ("cause", json!("tired")),
            ("code", json!("031")),
            ("code", json!(21)),
            ("layer", json!("physical")),
        ] {
            let mut v = failure();
            v[field] = bad;
            let why = rejected(&v);
            assert!(why.contains(&format!("/{field}")), "{why}");
        }
        // A required field missing, a field the schema does not describe, a wrong type.
        let mut v = failure();
        v.as_object_mut().unwrap().remove("evidence");
        assert!(rejected(&v).contains("evidence"));
        let mut v = failure();
        v["surprise"] = json!(1);
        assert!(rejected(&v).contains("surprise"));
        let mut v = failure();
        v["pid"] = json!(-1);
        assert!(rejected(&v).contains("/pid"));
        let mut v = failure();
        v["dst"] = json!("10.0.0.2");
        assert!(rejected(&v).contains("/dst"));
        let mut v = failure();
        v["time"] = json!("yesterday");
        rejected(&v);
        // A listener without its side.
        let mut v = failure();
        v["listener"] = json!({});
        rejected(&v);
        // The stats' records lose a bucket.
        let mut v = stats();
        v["records"].as_object_mut().unwrap().remove("held");
        assert!(rejected(&v).contains("/records"));
        // An attached hook with a reason.
        rejected(&json!({
            "schema": "netladder/v1", "type": "hooks", "degraded": [],
            "hooks": [{
                "program": "p", "hook": "h", "optional": false, "status": "attached",
                "reason": "why", "needs": "", "without": "", "lost": null, "cost": "",
                "cost_means": "", "role": "optional", "opt_in": false, "requires": [],
                "uprobe_multi": false
            }]
        }));
    }

    #[test]
    #[should_panic(expected = "the schema does not allow")]
    fn parse_record_panics_with_the_line() {
        parse_record(r#"{"schema":"netladder/v1","type":"stats"}"#);
    }
}
