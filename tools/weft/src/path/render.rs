//! The vertical chain as text, and its minimal stable form.

use super::PathReport;

/// The vertical chain. `brief`: only step, verdict and cause (stable for golden tests).
pub fn render_text(r: &PathReport, brief: bool) -> String {
    let mut out = String::new();
    if brief {
        for h in &r.hops {
            let node = if h.node == "local" { "" } else { " remote" };
            match h.cause {
                Some(c) if !h.ok => out.push_str(&format!("✗ {}{node} {c}\n", h.step)),
                _ => out.push_str(&format!("✓ {}{node}\n", h.step)),
            }
        }
    } else {
        out.push_str(&format!("path {} → {}\n", r.src, r.dst));
        let w = r.hops.iter().map(|h| h.step.len()).max().unwrap_or(0);
        let mut node = "local".to_string();
        for h in &r.hops {
            if h.node != node {
                out.push_str(&format!("  ── node {} ──\n", h.node));
                node.clone_from(&h.node);
            }
            let mark = if h.ok { "✓" } else { "✗" };
            out.push_str(&format!("  {mark} {:w$}  {}\n", h.step, h.object));
            if let Some(s) = &h.source {
                out.push_str(&format!("    {:w$}  ← {s}\n", ""));
            }
            if let (false, Some(d)) = (h.ok, &h.detail) {
                out.push_str(&format!("    {:w$}  {} {d}\n", "", h.cause.map(|c| c.code()).unwrap_or("")));
            }
        }
        if let Some(p) = &r.probe {
            out.push_str(&format!("  probe ({}, {} sent):\n", p.proto, p.sent));
            for h in &p.hops {
                let seen = if h.requests > 0 { "seen" } else { "not seen" };
                let on = if h.node == "local" { "this node".to_string() } else { h.node.clone() };
                out.push_str(&format!(
                    "    {:w$}  {:16} {on:15} {seen:8} out {} back {}\n",
                    h.place, h.ifname, h.requests, h.replies
                ));
            }
            out.push_str(&format!("    last seen: {}\n", p.last_seen.as_deref().unwrap_or("nowhere")));
            if let (Some(size), Some(ok)) = (p.df_probe_size, p.df_answered) {
                out.push_str(&format!(
                    "    DF probe {size} bytes: {}\n",
                    if ok { "answered" } else { "NOT answered" }
                ));
            }
            if let Some(d) = &p.drops {
                drop_lines(&mut out, d, "");
            }
            if let Some(d) = &p.remote_drops {
                let node = p.hops.iter().find(|h| h.node != "local").map_or("the remote node", |h| &h.node);
                drop_lines(&mut out, d, &format!(" of {node}"));
            }
            for n in &p.notes {
                out.push_str(&format!("    note: {n}\n"));
            }
        }
        for n in &r.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
    }
    match (r.cause, r.hint) {
        (Some(c), Some(h)) => out.push_str(&format!("broken {c}: {h}\n")),
        _ => out.push_str("reachable\n"),
    }
    out
}

/// The kernel drop reasons of one node (`of_node` empty for this one, else ` of <node>`).
/// The probe's own drops come first (`probe drop`), then every IP drop of the machine in the
/// window (`kernel drop`).
fn drop_lines(out: &mut String, d: &crate::dropwatch::DropReport, of_node: &str) {
    if d.correlated && d.probe.is_empty() {
        out.push_str(&format!("    probe drops{of_node} (skb:kfree_skb): none of the probe's packets\n"));
    }
    for r in &d.probe {
        // An ICMP probe's echo replies: the pod's kernel offers each to its ping sockets (it has
        // none) and frees it after the probe's raw socket took its copy.
        let replies = (r.reason == "NO_SOCKET" && r.location == "ping_rcv")
            .then_some(" (echo replies, after the probe's socket took its copy)");
        out.push_str(&format!(
            "    probe drop{of_node}: {} ×{} at {}{}\n",
            r.reason,
            r.count,
            r.location,
            replies.unwrap_or_default()
        ));
    }
    if d.reasons.is_empty() {
        out.push_str(&format!("    kernel drops{of_node} (skb:kfree_skb): none during the probe\n"));
    }
    for r in &d.reasons {
        out.push_str(&format!("    kernel drop{of_node}: {} ×{} at {}\n", r.reason, r.count, r.location));
    }
    if !d.reasons.is_empty() {
        out.push_str(&format!("    note: {}\n", d.note));
    }
}
