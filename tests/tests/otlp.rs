//! `watch --otlp`: real failures in a namespace reach a real OTLP receiver (grpcio and the
//! OpenTelemetry protobuf definitions, tests/src/otlp_receiver.py, which `cargo xtask setup`
//! installs for the tests) as log records with exactly the JSON event's fields, and the
//! `--metrics` counters as OTLP sums; over gRPC and over OTLP/HTTP. The receiver stopped in the
//! middle: netladder keeps running, counts what it could not send, says so, and delivers again
//! once the receiver is back on the same port.
//! Root only (NL-SKIP otherwise), and NL-SKIP where python3 with grpcio and opentelemetry-proto
//! is missing (the VM guests).
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use netladder_tests::*;
use serde_json::{json, Map, Value};

const RECEIVER: &str = include_str!("../src/otlp_receiver.py");
/// How long a record may take to reach the receiver (batches leave every 200 ms here; a
/// retry after an outage waits for the back-off).
const DELIVERY: Duration = Duration::from_secs(30);

/// A port nothing listens on right now, on 127.0.0.1 of the host's namespace.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("nltest-{}-otlp-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why the receiver cannot run here (python3, grpcio or opentelemetry-proto missing), if so.
fn receiver_missing() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import grpc, google.protobuf, opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc",
        ])
        .output();
    match out {
        Err(e) => Some(format!("python3 does not run here ({e})")),
        Ok(o) if !o.status.success() => Some(format!(
            "the OTLP receiver needs python3 with grpcio and opentelemetry-proto (cargo xtask \
             setup installs them): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("import failed")
        )),
        Ok(_) => None,
    }
}

/// The receiver, listening on 127.0.0.1 (gRPC and OTLP/HTTP); killed and reaped on drop.
struct Receiver {
    child: Child,
}

impl Receiver {
    fn start(dir: &Path, grpc: u16, http: u16, out: &Path) -> Receiver {
        let script = dir.join("otlp_receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .args([grpc.to_string(), http.to_string()])
            .arg(out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        if first.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the OTLP receiver did not start: {first:?}");
        }
        Receiver { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every request the receiver wrote so far.
fn received(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// An OTLP AnyValue (protobuf JSON mapping) as plain JSON: what netladder's event holds.
fn plain(any: &Value) -> Value {
    if let Some(s) = any.get("string_value") {
        return s.clone();
    }
    if let Some(i) = any.get("int_value") {
        // 64-bit integers are strings in the JSON mapping.
        let n: i64 = i
            .as_str()
            .map_or_else(|| i.as_i64().unwrap(), |s| s.parse().unwrap());
        return json!(n);
    }
    if let Some(b) = any.get("bool_value") {
        return b.clone();
    }
    if let Some(d) = any.get("double_value") {
        return d.clone();
    }
    if let Some(a) = any.get("array_value") {
        let values = a["values"].as_array().cloned().unwrap_or_default();
        return Value::Array(values.iter().map(plain).collect());
    }
    if let Some(kv) = any.get("kvlist_value") {
        return Value::Object(attributes(&kv["values"]));
    }
    panic!("an AnyValue of no known kind: {any}");
}

fn attributes(list: &Value) -> Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv["key"].as_str().unwrap().to_owned(), plain(&kv["value"])))
        .collect()
}

/// A JSON value without its null fields (at any depth): what OTLP carries of it.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The log records received so far, each with its request's resource attributes and transport.
fn log_records(file: &Path) -> Vec<(Value, Map<String, Value>, String)> {
    let mut out = Vec::new();
    for req in received(file).iter().filter(|r| r["signal"] == "logs") {
        for rl in req["request"]["resource_logs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let resource = attributes(&rl["resource"]["attributes"]);
            for sl in rl["scope_logs"].as_array().into_iter().flatten() {
                for r in sl["log_records"].as_array().into_iter().flatten() {
                    out.push((
                        r.clone(),
                        resource.clone(),
                        req["transport"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// Waits for the log record of the failure to `dst`.
fn wait_record(file: &Path, dst: &str) -> (Value, Map<String, Value>, String) {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let found = log_records(file)
            .into_iter()
            .find(|(r, _, _)| attributes(&r["attributes"]).get("dst") == Some(&json!(dst)));
        if let Some(f) = found {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "no log record for {dst} within {DELIVERY:?}; received: {:#?}",
            received(file)
        );
        sleep(Duration::from_millis(100));
    }
}

/// Asserts that the record is exactly the event: the summary as body, every other field but
/// `type` and `time` as an attribute of the same name and value; severity by code; resource.
fn assert_record_is_event(record: &Value, resource: &Map<String, Value>, ev: &Value) {
    assert_eq!(record["body"]["string_value"], ev["summary"], "{record:#}");
    let attrs = attributes(&record["attributes"]);
    let mut want = without_nulls(ev).as_object().unwrap().clone();
    for k in ["type", "time", "summary"] {
        want.remove(k);
    }
    assert_eq!(
        Value::Object(attrs.clone()),
        Value::Object(want),
        "{record:#}"
    );
    // The attributes the issue names, each present (those that are not null for this failure).
    for k in [
        "code", "title", "layer", "cause", "errno", "pid", "comm", "cgroup", "netns", "dst",
        "evidence", "next", "count",
    ] {
        assert!(attrs.contains_key(k), "attribute {k} missing: {record:#}");
    }
    // #021 is a warning (a service said no).
    assert_eq!(
        record["severity_number"], "SEVERITY_NUMBER_WARN",
        "{record:#}"
    );
    assert_eq!(record["severity_text"], "WARN");
    assert_eq!(record["event_name"], "netladder.failure");
    assert_eq!(resource["service.name"], "netladder", "{resource:#?}");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    assert_eq!(resource["host.name"], host.trim());
    assert_eq!(
        resource["test.case"], "otlp",
        "OTEL_RESOURCE_ATTRIBUTES: {resource:#?}"
    );
}

/// Waits for a metrics request whose `netladder_failures` sum has a point for code 021 of
/// `count`; returns the sum.
fn wait_failures_sum(file: &Path, count: i64, transport: &str) -> Value {
    let deadline = Instant::now() + DELIVERY;
    loop {
        for req in received(file).iter().rev() {
            if req["signal"] != "metrics" || req["transport"] != transport {
                continue;
            }
            let metrics = &req["request"]["resource_metrics"][0]["scope_metrics"][0]["metrics"];
            let Some(m) = metrics
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == "netladder_failures")
            else {
                continue;
            };
            let sum = &m["sum"];
            let hit = sum["data_points"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| {
                    attributes(&p["attributes"]).get("code") == Some(&json!("021"))
                        && p["as_int"] == json!(count.to_string())
                });
            if hit {
                return sum.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no netladder_failures sum with {count} for 021 over {transport}: {:#?}",
            received(file).iter().rfind(|r| r["signal"] == "metrics")
        );
        sleep(Duration::from_millis(200));
    }
}

/// A refused connection to 127.0.0.1:`port` inside `ns`, and its event.
fn refuse(w: &Watch, ns: &Netns, port: u16) -> Value {
    fails_with(
        connect(Some(ns), &format!("127.0.0.1:{port}"), &[]).unwrap(),
        "ECONNREFUSED",
    );
    let dst = format!("127.0.0.1:{port}");
    w.wait_for(|e| e["dst"] == dst.as_str(), FAILURE_TIMEOUT)
        .unwrap()
}

/// The exporter's settings for a test: small batches soon, metrics every second, a short
/// request bound, a resource attribute and a header from the environment.
fn otlp_env() {
    for (k, v) in [
        ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_RESOURCE_ATTRIBUTES", "test.case=otlp"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-netladder-test=1"),
    ] {
        std::env::set_var(k, v);
    }
}

/// The last stats line with an `otlp` object matching `pred`, waiting for it.
fn wait_stats(w: &Watch, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let found = w
            .events()
            .into_iter()
            .rev()
            .find(|e| e["type"] == "stats" && pred(&e["otlp"]));
        if let Some(s) = found {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no such stats line: {:#?}",
            w.events()
                .iter()
                .filter(|e| e["type"] == "stats")
                .collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn grpc_receiver_gets_records_and_sums_and_an_outage_is_counted_and_survived() {
    let Some(_one) = root_serial() else {
        return;
    };
    if let Some(why) = receiver_missing() {
        skip(&why);
        return;
    }
    otlp_env();
    let dir = TempDir::new("grpc");
    let file = dir.0.join("received.jsonl");
    let (grpc, http) = (free_port(), free_port());
    let receiver = Receiver::start(&dir.0, grpc, http, &file);
    let ns = Netns::new("otlp").unwrap();
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let mut w = Watch::start(&[
        "--netns",
        &ns.inode().to_string(),
        "--otlp",
        &endpoint,
        "--stats-interval",
        "1",
    ])
    .unwrap();

    // A real #021 arrives as a log record that is the JSON event, field for field.
    let ev = refuse(&w, &ns, 9021);
    assert_eq!(ev["code"], "021");
    let (record, resource, transport) = wait_record(&file, "127.0.0.1:9021");
    assert_eq!(transport, "grpc");
    assert_record_is_event(&record, &resource, &ev);
    // The counters --metrics serves arrive as OTLP sums: cumulative, monotonic.
    let sum = wait_failures_sum(&file, 1, "grpc");
    assert_eq!(sum["is_monotonic"], true);
    assert_eq!(
        sum["aggregation_temporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );

    // The receiver goes away: failures go on being reported, and what cannot be sent is
    // counted (after the retries) and said.
    receiver.stop();
    let lost: Vec<Value> = (9031..=9033).map(|p| refuse(&w, &ns, p)).collect();
    assert_eq!(lost.len(), 3);
    wait_stats(&w, |o| {
        o["logs_failed"].as_u64().unwrap_or(0) >= 3
            && o["metrics_failed"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        !w.exited(),
        "netladder must keep running without its collector"
    );

    // Back on the same port: delivery resumes, logs and metrics.
    let receiver = Receiver::start(&dir.0, grpc, http, &file);
    let ev = refuse(&w, &ns, 9041);
    let (record, resource, _) = wait_record(&file, "127.0.0.1:9041");
    assert_record_is_event(&record, &resource, &ev);
    wait_failures_sum(&file, 5, "grpc");
    let before_stop = log_records(&file).len();
    assert!(before_stop >= 2);

    let (events, stderr) = w.stop().unwrap();
    receiver.stop();
    // Said on stderr, once per interval while it lasted, with the reason.
    assert!(
        stderr.contains(&format!(
            "OTLP: not sent to {endpoint} (gRPC) since the last report"
        )) && stderr.contains("log records failed after retries")
            && stderr.contains("last error: "),
        "{stderr}"
    );
    // Every failure line is exactly one of: sent, dropped (queue full), failed.
    let last = events
        .iter()
        .rev()
        .find(|e| e["type"] == "stats" && e["final"] == true)
        .expect("a final stats line");
    let o = &last["otlp"];
    let failures = events.iter().filter(|e| e["type"] == "failure").count() as u64;
    let n = |k: &str| o[k].as_u64().unwrap();
    assert_eq!(
        n("logs_sent") + n("logs_queue_full") + n("logs_failed"),
        failures,
        "{last:#}"
    );
    assert!(n("logs_failed") >= 3, "{last:#}");
    assert_eq!(n("logs_sent"), log_records(&file).len() as u64, "{last:#}");
    let human = stderr
        .lines()
        .rev()
        .find(|l| l.contains("kernel records"))
        .expect("the final stats line on stderr");
    assert!(human.contains("OTLP: "), "{human}");
}

#[test]
fn otlp_http_protobuf_gets_the_same_records_and_sums() {
    let Some(_one) = root_serial() else {
        return;
    };
    if let Some(why) = receiver_missing() {
        skip(&why);
        return;
    }
    otlp_env();
    let dir = TempDir::new("http");
    let file = dir.0.join("received.jsonl");
    let (grpc, http) = (free_port(), free_port());
    let _receiver = Receiver::start(&dir.0, grpc, http, &file);
    let ns = Netns::new("otlp-http").unwrap();
    let endpoint = format!("http://127.0.0.1:{http}/v1/logs");
    let w = Watch::start(&["--netns", &ns.inode().to_string(), "--otlp", &endpoint]).unwrap();
    let ev = refuse(&w, &ns, 9021);
    let (record, resource, transport) = wait_record(&file, "127.0.0.1:9021");
    assert_eq!(transport, "http");
    assert_record_is_event(&record, &resource, &ev);
    wait_failures_sum(&file, 1, "http");
    let (events, _) = w.stop().unwrap();
    let last = events
        .iter()
        .rev()
        .find(|e| e["type"] == "stats" && e["final"] == true)
        .expect("a final stats line");
    assert_eq!(last["otlp"]["logs_sent"], 1, "{last:#}");
    assert_eq!(last["otlp"]["logs_failed"], 0, "{last:#}");
    assert_eq!(last["otlp"]["logs_queue_full"], 0, "{last:#}");
}

/// Exit status 1 and exactly one line on stderr containing `needle`.
fn one_line_error(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let out = Command::new(netladder_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line on stderr, got: {stderr}"
    );
    assert!(
        lines[0].contains(needle),
        "{args:?}: {needle:?} not in: {stderr}"
    );
}

#[test]
fn bad_otlp_settings_are_one_line_errors() {
    one_line_error(
        &["watch", "--otlp", "https://collector:4317"],
        &[],
        "https is not supported",
    );
    one_line_error(
        &["watch", "--otlp", "collector:4317"],
        &[],
        "not an http://HOST:PORT[/PATH] URL",
    );
    one_line_error(
        &["watch", "--otlp"],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "no-value")],
        "OTEL_EXPORTER_OTLP_HEADERS",
    );
    one_line_error(
        &["watch", "--otlp"],
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/json: not supported",
    );
}
