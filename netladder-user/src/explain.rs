//! `netladder explain [CODE]`: the offline reference for the ten ladder codes, from the ladder's
//! one source (`ladder::all`), with the same next steps `watch` and `diagnose` fill in.
use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::{cli::ExplainArgs, ladder};

pub fn run(args: ExplainArgs) -> Result<()> {
    let text = match &args.code {
        None if args.json => {
            json!(ladder::all().iter().map(rung_json).collect::<Vec<_>>()).to_string()
        }
        None => list(),
        Some(code) => {
            let code = ladder::parse_code(code).map_err(|e| anyhow!(e))?;
            let rung = ladder::rung(code);
            if args.json {
                rung_json(rung).to_string()
            } else {
                page(rung)
            }
        }
    };
    println!("{}", text.trim_end());
    Ok(())
}

/// One line per code: id, short name, title, layer.
fn list() -> String {
    let mut out =
        String::from("The ten errors of the diagnostic ladder (netladder explain CODE for one):\n");
    for r in ladder::all() {
        out += &format!(
            "#{}  {:<16} {:<12} {}\n",
            ladder::id(r.code),
            r.slug,
            r.layer.as_str(),
            r.title
        );
    }
    out
}

/// The full reference for one code, as text.
pub fn page(r: &ladder::Rung) -> String {
    let mut out = format!("#{} {} ({})\n", ladder::id(r.code), r.title, r.slug);
    out += &format!("layer: {}", r.layer);
    if let Some(errno) = r.errno {
        out += &format!("    error: {errno}");
    }
    out += "\n\nWhat it means\n";
    out += &indent(r.meaning);
    out += "\nUsual causes\n";
    for c in r.causes {
        out += &format!("  - {c}\n");
    }
    out += "\nHow netladder sees it\n";
    out += &indent(r.detection);
    out += "\nConfirm it by hand (replace the words in capitals)\n";
    for c in r.confirm() {
        out += &format!("  $ {c}\n");
    }
    out
}

/// Wraps a paragraph at about 96 columns, indented by two spaces.
fn indent(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + word.len() > 94 {
            out += &format!("  {line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    if !line.is_empty() {
        out += &format!("  {line}\n");
    }
    out
}

fn rung_json(r: &ladder::Rung) -> Value {
    json!({
        "code": ladder::id(r.code),
        "slug": r.slug,
        "title": r.title,
        "errno": r.errno,
        "layer": r.layer,
        "meaning": r.meaning,
        "causes": r.causes,
        "detection": r.detection,
        "confirm": r.confirm(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_page_with_every_part() {
        for r in ladder::all() {
            let p = page(r);
            for part in [
                "What it means",
                "Usual causes",
                "How netladder sees it",
                "Confirm it by hand",
            ] {
                assert!(p.contains(part), "{p}");
            }
            assert!(p.starts_with(&format!("#{} ", ladder::id(r.code))), "{p}");
            assert!(p.lines().all(|l| l.len() <= 200), "{p}");
        }
        assert_eq!(list().lines().count(), 11);
    }

    #[test]
    fn the_timeout_page_names_the_full_accept_queue() {
        let p = page(ladder::rung(ladder::Code::Timeout));
        assert!(p.contains("accept_queue_full"), "{p}");
        assert!(p.contains("ListenOverflows") && p.contains("server"), "{p}");
        assert!(p.contains("ss -ltn 'sport = :PORT'"), "{p}");
    }

    #[test]
    fn json_has_the_same_fields_for_every_code() {
        for r in ladder::all() {
            let v = rung_json(r);
            assert_eq!(v["code"], ladder::id(r.code));
            assert!(!v["confirm"].as_array().unwrap().is_empty());
            assert!(v["causes"].as_array().unwrap().len() == r.causes.len());
        }
    }
}
