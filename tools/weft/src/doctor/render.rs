//! Output of `weft doctor`: an aligned text report (stable: no timings), JSON (the [`Report`]
//! as documented in the README) and a Graphviz graph (nodes with their subnet and VTEP, one
//! edge per overlay link, broken ones red and dashed with the cause).

use std::fmt::Write as _;

use super::check::{Report, Severity};

/// The text report.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "etcd {} (revision {}): network {}, {} node(s)",
        r.etcd_prefix,
        r.etcd_revision,
        r.network,
        r.nodes.len()
    );
    let rows: Vec<[String; 5]> = r
        .nodes
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                n.subnet.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                n.vtep_mac.clone().unwrap_or_else(|| "-".into()),
                n.device_mac.clone().unwrap_or_else(|| "-".into()),
                n.view.to_string(),
            ]
        })
        .collect();
    let header = ["NODE", "SUBNET", "LEASE VTEP MAC", "DEVICE MAC", "VIEW"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if !r.findings.is_empty() {
        let _ = writeln!(out, "\nfindings:");
        for f in &r.findings {
            let mark = match f.severity {
                Severity::Error => "✗",
                Severity::Warning => "!",
            };
            let fm = f.failure_mode.map(|m| format!(" ({m})")).unwrap_or_default();
            let _ = writeln!(out, "{mark} {}{fm}: {}", f.cause.code(), f.message);
            let _ = writeln!(out, "    nodes: {}", f.nodes.join(", "));
            for o in f.objects.iter().take(10) {
                let _ = writeln!(out, "    {o}");
            }
            if f.objects.len() > 10 {
                let _ = writeln!(out, "    ... and {} more", f.objects.len() - 10);
            }
            let _ = writeln!(out, "    hint: {}", f.hint);
        }
    }
    if !r.dry_run.is_empty() {
        let _ = writeln!(out, "\ndry run (what each node's next flanneld reconcile changes):");
        let w = r.dry_run.iter().map(|n| n.node.len()).max().unwrap_or(0);
        for n in &r.dry_run {
            for op in &n.ops {
                let _ = writeln!(out, "  {:<w$}  {op}", n.node);
            }
        }
    }
    let errors = r.findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = r.findings.len() - errors;
    let _ = if r.healthy {
        writeln!(
            out,
            "\nhealthy{}",
            if warnings > 0 { format!(" ({warnings} warning(s))") } else { String::new() }
        )
    } else {
        writeln!(out, "\nbroken: {errors} finding(s)")
    };
    out
}

/// The report as pretty JSON.
pub fn json(r: &Report) -> String {
    match serde_json::to_string_pretty(r) {
        Ok(j) => format!("{j}\n"),
        // Serialising plain data cannot fail; say so rather than print nothing.
        Err(e) => format!("{{\"error\": \"encode report: {e}\"}}\n"),
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The Graphviz graph.
pub fn dot(r: &Report) -> String {
    let mut out = String::new();
    let errors = r.findings.iter().filter(|f| f.severity == Severity::Error).count();
    let title = if r.healthy {
        format!("weft doctor: network {}, healthy", r.network)
    } else {
        format!("weft doctor: network {}, {errors} finding(s)", r.network)
    };
    let _ = writeln!(out, "digraph weft {{");
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"Helvetica\", label=\"{}\", labelloc=t, fontsize=16, nodesep=0.6, ranksep=1.2];",
        esc(&title)
    );
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=11];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for n in &r.nodes {
        let node_causes: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.peer.is_none() && f.severity == Severity::Error && f.nodes.contains(&n.name))
            .map(|f| f.cause.code())
            .collect();
        let (color, bg) = if n.view != "ok" || !node_causes.is_empty() {
            ("red", "#fde8e8")
        } else {
            ("gray40", "#f4f8fc")
        };
        let id = esc(&n.name);
        let _ = writeln!(out, "  subgraph \"cluster_{id}\" {{");
        let mut label = format!("node {}", n.name);
        if !node_causes.is_empty() {
            label.push_str(&format!("\\n{}", node_causes.join(", ")));
        }
        if let Some(e) = &n.error {
            let short: String = e.chars().take(60).collect();
            label.push_str(&format!("\\nview unavailable: {}", esc(&short)));
        }
        let _ = writeln!(
            out,
            "    label=\"{label}\"; color={color}; style=\"rounded,filled\"; fillcolor=\"{bg}\"; fontcolor={};",
            if color == "red" { "red" } else { "black" }
        );
        let subnet = n.subnet.map(|s| s.to_string()).unwrap_or_else(|| "no lease".into());
        let _ = writeln!(
            out,
            "    \"{id}/subnet\" [shape=box, style=\"rounded,filled\", fillcolor=white, label=\"pods\\n{subnet}\"];"
        );
        let mac_ok = n.vtep_mac.is_some() && n.vtep_mac == n.device_mac;
        let vtep = match (&n.device_mac, &n.vtep_mac) {
            (Some(d), Some(l)) if d != l => format!("VTEP\\n{d}\\nlease says {l}"),
            (Some(d), _) => format!("VTEP\\n{d}"),
            (None, Some(l)) => format!("VTEP (device ?)\\nlease {l}"),
            (None, None) => "VTEP ?".to_string(),
        };
        let vcolor = if mac_ok { "black" } else { "red" };
        let _ = writeln!(
            out,
            "    \"{id}/vtep\" [shape=ellipse, style=filled, fillcolor=white, color={vcolor}, fontcolor={vcolor}, label=\"{vtep}\"];"
        );
        let _ = writeln!(out, "    \"{id}/subnet\" -> \"{id}/vtep\" [arrowhead=none, style=dotted];");
        let _ = writeln!(out, "  }}");
    }
    // One edge per node pair when both directions are fine, else one per direction.
    for l in &r.links {
        let back = r.links.iter().find(|b| b.from == l.to && b.to == l.from);
        let both_ok = l.broken.is_empty() && back.is_some_and(|b| b.broken.is_empty());
        let (from, to) = (esc(&l.from), esc(&l.to));
        if both_ok {
            if l.from < l.to {
                let _ = writeln!(
                    out,
                    "  \"{from}/vtep\" -> \"{to}/vtep\" [dir=both, color=darkgreen, penwidth=1.5, arrowsize=0.6];"
                );
            }
        } else if l.broken.is_empty() {
            let _ = writeln!(out, "  \"{from}/vtep\" -> \"{to}/vtep\" [color=darkgreen, arrowsize=0.6];");
        } else {
            let causes: Vec<&str> = l.broken.iter().map(|c| c.code()).collect();
            let _ = writeln!(
                out,
                "  \"{from}/vtep\" -> \"{to}/vtep\" [color=red, fontcolor=red, style=dashed, penwidth=2, label=\"{}\"];",
                causes.join("\\n")
            );
        }
    }
    let _ = writeln!(out, "}}");
    out
}
