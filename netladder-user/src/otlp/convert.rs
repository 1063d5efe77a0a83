//! From netladder's own forms to OTLP messages: a failure's JSON event (the fields `--json`
//! prints, so the two cannot drift) to a log record, and the `--metrics` exposition to OTLP
//! sums and gauges.
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use serde_json::Value;

use crate::ladder::{self, Code};

/// The instrumentation scope of everything netladder sends.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "netladder".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

pub fn resource(attrs: &[(String, String)]) -> Resource {
    Resource {
        attributes: attrs
            .iter()
            .map(|(k, v)| key_value(k, Value::String(v.clone())))
            .collect(),
        ..Default::default()
    }
}

/// How grave a failure of `code` is: error where the host or its network is broken (no route,
/// network unreachable, neighbour unanswered, local ports used up) or a peer's identity is in
/// doubt (certificate refused); warning where one service said no or did not answer.
pub fn severity(code: Code) -> SeverityNumber {
    match code {
        Code::NoRoute
        | Code::NetUnreachable
        | Code::ArpFailed
        | Code::TimeWait
        | Code::TlsVerify => SeverityNumber::Error,
        Code::Refused | Code::Timeout | Code::Dns | Code::AddrInUse | Code::SshPublickey => {
            SeverityNumber::Warn
        }
    }
}

/// One failure event as a log record: the summary is the body; every other field of the event
/// but `type` and `time` is an attribute of the same name (objects as key-value lists, arrays
/// as arrays, nulls left out).
pub fn log_record(event: &Value, now_ns: u64) -> LogRecord {
    let severity = event["code"]
        .as_str()
        .and_then(|c| ladder::parse_code(c).ok())
        .map_or(SeverityNumber::Error, severity);
    let attributes = event
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| !matches!(k.as_str(), "type" | "time" | "summary") && !v.is_null())
        .map(|(k, v)| key_value(k, v.clone()))
        .collect();
    LogRecord {
        time_unix_nano: now_ns,
        observed_time_unix_nano: now_ns,
        severity_number: severity as i32,
        severity_text: severity_text(severity).into(),
        body: Some(any(event["summary"].clone())),
        attributes,
        event_name: "netladder.failure".into(),
        ..Default::default()
    }
}

fn severity_text(s: SeverityNumber) -> &'static str {
    match s {
        SeverityNumber::Warn => "WARN",
        _ => "ERROR",
    }
}

fn key_value(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(any(v)),
        ..Default::default()
    }
}

fn any(v: Value) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(b)),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => V::IntValue(i),
            (None, Some(f)) if n.is_f64() => V::DoubleValue(f),
            // A u64 beyond i64: its digits.
            _ => V::StringValue(n.to_string()),
        }),
        Value::String(s) => Some(V::StringValue(s)),
        Value::Array(a) => Some(V::ArrayValue(ArrayValue {
            values: a.into_iter().map(any).collect(),
        })),
        Value::Object(o) => Some(V::KvlistValue(KeyValueList {
            values: o
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| key_value(&k, v))
                .collect(),
        })),
    };
    AnyValue { value }
}

pub fn logs_request(resource: Resource, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One family of the exposition as it is read.
#[derive(Default)]
struct Family {
    help: String,
    kind: String,
    points: Vec<NumberDataPoint>,
}

/// The `--metrics` exposition (OpenMetrics text, as prometheus-client writes it) as OTLP
/// metrics: each counter family a cumulative monotonic sum named as the family (without
/// `_total`, which a Prometheus exporter of the collector adds back), each gauge a gauge.
pub fn metrics_request(
    resource: Resource,
    exposition: &str,
    start_ns: u64,
    now_ns: u64,
) -> ExportMetricsServiceRequest {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                families.entry(name.to_owned()).or_default().help = unescape(help);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                families.entry(name.to_owned()).or_default().kind = kind.trim().to_owned();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, labels, value)) = sample(line) else {
            continue;
        };
        // The family: the series name, or it without the suffix its type adds.
        let family = if families.contains_key(series) {
            series
        } else if let Some(base) = series.strip_suffix("_total") {
            base
        } else {
            series
        };
        let Some(f) = families.get_mut(family) else {
            continue;
        };
        let value = if value.fract() == 0.0 && value.abs() < 9.0e15 {
            number_data_point::Value::AsInt(value as i64)
        } else {
            number_data_point::Value::AsDouble(value)
        };
        f.points.push(NumberDataPoint {
            attributes: labels
                .into_iter()
                .map(|(k, v)| key_value(&k, Value::String(v)))
                .collect(),
            start_time_unix_nano: start_ns,
            time_unix_nano: now_ns,
            value: Some(value),
            ..Default::default()
        });
    }
    let metrics = families
        .into_iter()
        .filter(|(_, f)| !f.points.is_empty())
        .filter_map(|(name, f)| {
            let data = match f.kind.as_str() {
                "counter" => metric::Data::Sum(Sum {
                    data_points: f.points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                "gauge" => metric::Data::Gauge(Gauge {
                    data_points: f
                        .points
                        .into_iter()
                        .map(|p| NumberDataPoint {
                            start_time_unix_nano: 0,
                            ..p
                        })
                        .collect(),
                }),
                _ => return None,
            };
            Some(Metric {
                name,
                description: f.help,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A sample's labels, in their order.
type Labels = Vec<(String, String)>;

/// `name{a="x",b="y"} value` (labels optional): the name, the labels, the value.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 1,
                ',' | ' ' => {}
                '=' => {
                    // The quoted value, with \\, \" and \n escapes.
                    let (_, '"') = chars.next()? else {
                        return None;
                    };
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        };
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_failure_event_becomes_a_log_record() {
        let ev = serde_json::json!({
            "type": "failure", "time": "2026-01-01T00:00:00.000Z", "code": "021",
            "title": "connection refused", "summary": "no listener", "pid": 42,
            "errno": "ECONNREFUSED", "dst": "127.0.0.1:9", "src": null,
            "evidence": ["RST received"], "pod": null,
            "container": {"runtime": "containerd", "id": "abc", "name": null},
            "firewall": {"table": "filter", "packets": 3},
        });
        let r = log_record(&ev, 7);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("no listener".into()))
        );
        assert_eq!(attr(&r, "pid"), Some(&any_value::Value::IntValue(42)));
        assert_eq!(
            attr(&r, "code"),
            Some(&any_value::Value::StringValue("021".into()))
        );
        for absent in ["type", "time", "summary", "src", "pod"] {
            assert!(attr(&r, absent).is_none(), "{absent}");
        }
        let Some(any_value::Value::ArrayValue(a)) = attr(&r, "evidence") else {
            panic!("evidence: {r:?}");
        };
        assert_eq!(a.values.len(), 1);
        let Some(any_value::Value::KvlistValue(c)) = attr(&r, "container") else {
            panic!("container: {r:?}");
        };
        assert_eq!(c.values.len(), 2, "the null name is left out");
        assert!(matches!(
            attr(&r, "firewall"),
            Some(any_value::Value::KvlistValue(_))
        ));
        assert_eq!(severity(Code::NoRoute), SeverityNumber::Error);
    }

    #[test]
    fn the_exposition_becomes_sums_and_gauges() {
        let text = "# HELP netladder_failures Failed connections\n\
                    # TYPE netladder_failures counter\n\
                    netladder_failures_total{code=\"021\",layer=\"application\",cause=\"no_listener\"} 2\n\
                    netladder_failures_total{code=\"023\",layer=\"firewall\",cause=\"a \\\"b\\\"\"} 1\n\
                    # HELP netladder_held Records held\n\
                    # TYPE netladder_held gauge\n\
                    netladder_held 0\n\
                    # EOF\n";
        let req = metrics_request(Resource::default(), text, 1, 2);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2);
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("{metrics:?}");
        };
        assert_eq!(metrics[0].name, "netladder_failures");
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsInt(2))
        );
        assert_eq!(sum.data_points[0].attributes.len(), 3);
        assert_eq!(
            sum.data_points[1].attributes[2]
                .value
                .as_ref()
                .unwrap()
                .value,
            Some(any_value::Value::StringValue("a \"b\"".into()))
        );
        assert!(matches!(&metrics[1].data, Some(metric::Data::Gauge(_))));
    }
}
