//! Output of `weft doctor`: an aligned text report (stable: no timings), JSON (the [`Report`]
//! as documented in the README) and a Graphviz graph (nodes with their subnet and VTEP, one
//! edge per overlay link, broken ones red and dashed with the cause).

use std::fmt::Write as _;

use super::check::{Report, Severity};

/// The text report.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    // host-gw has no VTEP (docs/flannel.md §4.2): the backend is named and the MAC columns go.
    let host_gw = r.backend == weft_flanneld::lease::BACKEND_HOST_GW;
    let _ = writeln!(
        out,
        "etcd {} (revision {}): network {}{}, {} node(s)",
        r.etcd_prefix,
        r.etcd_revision,
        r.network,
        if host_gw { " (host-gw)" } else { "" },
        r.nodes.len()
    );
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|n| {
            let mut row = vec![n.name.clone(), n.subnet.map(|s| s.to_string()).unwrap_or_else(|| "-".into())];
            if !host_gw {
                row.push(n.vtep_mac.clone().unwrap_or_else(|| "-".into()));
                row.push(n.device_mac.clone().unwrap_or_else(|| "-".into()));
            }
            row.push(n.view.to_string());
            row
        })
        .collect();
    let header: Vec<String> = if host_gw {
        ["NODE", "SUBNET", "VIEW"].map(String::from).to_vec()
    } else {
        ["NODE", "SUBNET", "LEASE VTEP MAC", "DEVICE MAC", "VIEW"].map(String::from).to_vec()
    };
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out.push_str(&super::ipv6::text(&r.nodes));
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

/// Text inside an HTML-like Graphviz label.
fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
        "  graph [layout=circo, mindist=2.2, fontname=\"Helvetica\", label=\"{}\", labelloc=t, fontsize=16];",
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
        let bad = n.view != "ok" || !node_causes.is_empty();
        let (border, head) = if bad { ("red", "#f8d0d0") } else { ("gray40", "#dce8f5") };
        let subnet = n.subnet.map(|s| s.to_string()).unwrap_or_else(|| "no lease".into());
        let mut rows = vec![
            format!("<TR><TD BGCOLOR=\"{head}\"><B>node {}</B></TD></TR>", html(&n.name)),
            format!("<TR><TD>pods {}</TD></TR>", html(&subnet)),
        ];
        let vtep = match (&n.device_mac, &n.vtep_mac) {
            _ if r.backend == weft_flanneld::lease::BACKEND_HOST_GW => {
                "host-gw: routes via its PublicIP".to_string()
            }
            (Some(d), Some(l)) if d != l => {
                format!("VTEP {}<BR/><FONT COLOR=\"red\">lease says {}</FONT>", html(d), html(l))
            }
            (Some(d), _) => format!("VTEP {}", html(d)),
            (None, Some(l)) => format!("<FONT COLOR=\"red\">VTEP ?</FONT> (lease {})", html(l)),
            (None, None) => "<FONT COLOR=\"red\">VTEP ?</FONT>".to_string(),
        };
        rows.push(format!("<TR><TD>{vtep}</TD></TR>"));
        if let Some(e) = &n.error {
            let short: String = e.chars().take(48).collect();
            rows.push(format!(
                "<TR><TD><FONT COLOR=\"red\">view unavailable<BR/>{}</FONT></TD></TR>",
                html(&short)
            ));
        }
        if !node_causes.is_empty() {
            rows.push(format!("<TR><TD><FONT COLOR=\"red\">{}</FONT></TD></TR>", node_causes.join("<BR/>")));
        }
        let _ = writeln!(
            out,
            "  \"{}\" [shape=plain, label=<<TABLE BORDER=\"1\" CELLBORDER=\"0\" CELLSPACING=\"0\" CELLPADDING=\"4\" COLOR=\"{border}\">{}</TABLE>>];",
            esc(&n.name),
            rows.join("")
        );
    }
    // One edge per node pair: green when both directions work, else red and dashed with the
    // causes of whichever direction is broken.
    for l in r.links.iter().filter(|l| l.from < l.to) {
        let back = r.links.iter().find(|b| b.from == l.to && b.to == l.from);
        let broken = !l.broken.is_empty() || back.is_some_and(|b| !b.broken.is_empty());
        // The label names the link's own causes; a broken end is shown on its node.
        let mut causes: Vec<&str> = l.broken.iter().take(l.own).map(|c| c.code()).collect();
        for c in back.map(|b| b.broken.get(..b.own).unwrap_or_default()).unwrap_or_default() {
            if !causes.contains(&c.code()) {
                causes.push(c.code());
            }
        }
        let (from, to) = (esc(&l.from), esc(&l.to));
        if !broken {
            let _ = writeln!(
                out,
                "  \"{from}\" -> \"{to}\" [dir=both, color=darkgreen, penwidth=1.5, arrowsize=0.6];"
            );
        } else {
            let _ = writeln!(
                out,
                "  \"{from}\" -> \"{to}\" [dir=both, color=red, fontcolor=red, style=dashed, penwidth=2, arrowsize=0.6, label=\"{}\"];",
                causes.join("\\n")
            );
        }
    }
    let _ = writeln!(out, "}}");
    out
}
