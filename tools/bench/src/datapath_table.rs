//! The data-path benchmark's rows and its Markdown table: per path the throughput of every
//! iperf3 run, their median, the ratios to the hand-built kernel VXLAN and to the bare
//! underlay, and the sender's TCP retransmits. Pure: no namespaces, no processes.

/// weft's VXLAN must reach this share of the hand-built kernel VXLAN (issue 12, item 4).
pub const TARGET_OF_HAND_BUILT: f64 = 0.95;

/// One path between a sender on node 0 and a receiver on node 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Pod → pod over weft's flanneld, VXLAN backend, IPv4.
    WeftVxlan4,
    /// The same with no masquerade anywhere: flanneld without `--ip-masq` and the conflist's
    /// delegate with `"ipMasq": false` (with flanneld's off alone, the flannel plugin turns the
    /// bridge's on), so no nat rule loads conntrack on the pods' path: the same work as the
    /// hand-built VXLAN.
    WeftVxlanNoMasq4,
    /// Pod → pod over weft's flanneld, VXLAN backend, IPv6 (`flannel-v6.1`).
    WeftVxlan6,
    /// Pod → pod over weft's flanneld, host-gw backend, IPv4.
    WeftHostGw4,
    /// Pod → pod over a kernel VXLAN device made with `ip link add … type vxlan`.
    HandVxlan4,
    /// The same over the IPv6 underlay, pod → pod over IPv6.
    HandVxlan6,
    /// The same, with flanneld's `--ip-masq` firewall rules on both nodes.
    HandVxlanRules4,
    /// The hand-built IPv6 VXLAN with flanneld's IPv6 (`ip6tables`) rules on both nodes.
    HandVxlanRules6,
    /// Node → node on the underlay addresses, no overlay: the floor.
    Underlay4,
}

impl PathKind {
    /// Every row, in table order.
    pub const ALL: [PathKind; 9] = [
        PathKind::WeftVxlan4,
        PathKind::WeftVxlanNoMasq4,
        PathKind::WeftVxlan6,
        PathKind::WeftHostGw4,
        PathKind::HandVxlan4,
        PathKind::HandVxlan6,
        PathKind::HandVxlanRules4,
        PathKind::HandVxlanRules6,
        PathKind::Underlay4,
    ];

    /// The row's first cell.
    pub fn label(self) -> &'static str {
        match self {
            PathKind::WeftVxlan4 => "weft VXLAN, IPv4 (pod → pod)",
            PathKind::WeftVxlanNoMasq4 => "weft VXLAN, IPv4, no masquerade anywhere (pod → pod)",
            PathKind::WeftVxlan6 => "weft VXLAN, IPv6 (pod → pod)",
            PathKind::WeftHostGw4 => "weft host-gw, IPv4 (pod → pod)",
            PathKind::HandVxlan4 => "hand-built kernel VXLAN, IPv4 (pod → pod)",
            PathKind::HandVxlan6 => "hand-built kernel VXLAN, IPv6 (pod → pod)",
            PathKind::HandVxlanRules4 => {
                "hand-built kernel VXLAN + flanneld's firewall rules, IPv4 (pod → pod)"
            }
            PathKind::HandVxlanRules6 => {
                "hand-built kernel VXLAN + flanneld's firewall rules, IPv6 (pod → pod)"
            }
            PathKind::Underlay4 => "bare underlay, IPv4 (node → node)",
        }
    }

    /// The hand-built VXLAN of the same family: the reference of the "of hand-built" column.
    pub fn hand_built(self) -> PathKind {
        match self {
            PathKind::WeftVxlan6 | PathKind::HandVxlan6 | PathKind::HandVxlanRules6 => PathKind::HandVxlan6,
            _ => PathKind::HandVxlan4,
        }
    }
}

/// One iperf3 run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Receiver-side throughput.
    pub bits_per_second: f64,
    /// Sender-side TCP retransmits, when iperf3 reported them.
    pub retransmits: Option<u64>,
}

/// What a path's row holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Measured: the MTU of the sender's interface and one sample per run.
    Measured { mtu: u32, samples: Vec<Sample> },
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub path: PathKind,
    pub outcome: Outcome,
}

impl Row {
    /// Median throughput of the runs; `None` without runs.
    pub fn median_bps(&self) -> Option<f64> {
        match &self.outcome {
            Outcome::Measured { samples, .. } => {
                median(&samples.iter().map(|s| s.bits_per_second).collect::<Vec<_>>())
            }
        }
    }
}

/// The median (upper median for an even count, as `stats::median`); `None` for no values or
/// a NaN among them.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

fn gbit(bps: f64) -> String {
    format!("{:.2}", bps / 1e9)
}

fn percent(part: Option<f64>, whole: Option<f64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0.0 => format!("{:.1} %", 100.0 * p / w),
        _ => "–".to_string(),
    }
}

fn median_of(rows: &[Row], path: PathKind) -> Option<f64> {
    rows.iter().find(|r| r.path == path).and_then(Row::median_bps)
}

/// The Markdown table of `rows`.
pub fn render(rows: &[Row], seconds: u32) -> String {
    let floor = median_of(rows, PathKind::Underlay4);
    let mut out = format!(
        "| path | sender MTU | median Gbit/s | runs ({seconds} s each), Gbit/s | of hand-built VXLAN (same family) | of bare underlay | retransmits per run |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for row in rows {
        match &row.outcome {
            Outcome::Measured { mtu, samples } => {
                let med = row.median_bps();
                let runs: Vec<String> = samples.iter().map(|s| gbit(s.bits_per_second)).collect();
                let retr: Vec<String> = samples
                    .iter()
                    .map(|s| s.retransmits.map_or_else(|| "?".to_string(), |r| r.to_string()))
                    .collect();
                out.push_str(&format!(
                    "| {} | {mtu} | {} | {} | {} | {} | {} |\n",
                    row.path.label(),
                    med.map_or_else(|| "–".to_string(), gbit),
                    runs.join(" / "),
                    percent(med, median_of(rows, row.path.hand_built())),
                    percent(med, floor),
                    retr.join(" / "),
                ));
            }
        }
    }
    out
}

/// `weft / reference` of the two paths' medians, `None` unless both are measured.
fn share(rows: &[Row], weft: PathKind, reference: PathKind) -> Option<f64> {
    match (median_of(rows, weft), median_of(rows, reference)) {
        (Some(w), Some(h)) if h > 0.0 => Some(w / h),
        _ => None,
    }
}

/// One target line: `<what>: x % (target ≥ 95 %: met|not met)`, or `<what>: not measured`.
fn target_line(what: &str, share: Option<f64>) -> String {
    match share {
        Some(s) => {
            let met = if s >= TARGET_OF_HAND_BUILT { "met" } else { "not met" };
            format!("{what}: {:.1} % (target ≥ {:.0} %: {met})", 100.0 * s, 100.0 * TARGET_OF_HAND_BUILT)
        }
        None => format!("{what}: not measured"),
    }
}

/// The verdict on the target: weft's VXLAN (IPv4) median over the hand-built one,
/// then (not a target, the explanation) over the hand-built one carrying the same rules, then
/// weft's IPv6 VXLAN over the hand-built IPv6 one when both were measured.
pub fn verdict(rows: &[Row]) -> String {
    let mut out = target_line(
        "weft VXLAN (IPv4) / hand-built kernel VXLAN",
        share(rows, PathKind::WeftVxlan4, PathKind::HandVxlan4),
    );
    if let Some(s) = share(rows, PathKind::WeftVxlan4, PathKind::HandVxlanRules4) {
        out.push_str(&format!(
            "\nweft VXLAN (IPv4) / hand-built kernel VXLAN with flanneld's firewall rules: {:.1} %",
            100.0 * s
        ));
    }
    if let Some(s) = share(rows, PathKind::WeftVxlanNoMasq4, PathKind::HandVxlan4) {
        out.push_str(&format!(
            "\nweft VXLAN (IPv4) with no masquerade anywhere / hand-built kernel VXLAN (the same work): {:.1} %",
            100.0 * s
        ));
    }
    if let Some(s) = share(rows, PathKind::WeftVxlan6, PathKind::HandVxlan6) {
        out.push('\n');
        out.push_str(&target_line("weft VXLAN (IPv6) / hand-built kernel VXLAN (IPv6)", Some(s)));
    }
    if let Some(s) = share(rows, PathKind::WeftVxlan6, PathKind::HandVxlanRules6) {
        out.push_str(&format!(
            "\nweft VXLAN (IPv6) / hand-built kernel VXLAN (IPv6) with flanneld's firewall rules: {:.1} %",
            100.0 * s
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(path: PathKind, gbits: &[f64]) -> Row {
        let samples = gbits
            .iter()
            .enumerate()
            .map(|(i, g)| Sample { bits_per_second: g * 1e9, retransmits: u64::try_from(i).ok() })
            .collect();
        Row { path, outcome: Outcome::Measured { mtu: 1450, samples } }
    }

    #[test]
    fn median_of_three_and_edges() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(4.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN, 2.0]), None);
    }

    #[test]
    fn table_has_runs_and_ratios() {
        let rows = vec![
            measured(PathKind::WeftVxlan4, &[9.0, 8.0, 10.0]),
            measured(PathKind::WeftVxlan6, &[7.0]),
            measured(PathKind::HandVxlan4, &[10.0, 12.0, 8.0]),
            measured(PathKind::Underlay4, &[20.0, 20.0, 20.0]),
            measured(PathKind::HandVxlanRules4, &[9.0, 9.0, 9.0]),
        ];
        let t = render(&rows, 5);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 7, "{t}");
        assert!(lines[0].contains("runs (5 s each)"), "{t}");
        assert_eq!(
            lines[2],
            "| weft VXLAN, IPv4 (pod → pod) | 1450 | 9.00 | 9.00 / 8.00 / 10.00 | 90.0 % | 45.0 % | 0 / 1 / 2 |"
        );
        assert!(lines[3].contains("| 7.00 | 7.00 | – |"), "no IPv6 hand-built path to compare with: {t}");
        assert!(lines[4].contains("| 10.00 |") && lines[4].contains("| 100.0 % | 50.0 % |"), "{t}");
        assert_eq!(
            verdict(&rows),
            "weft VXLAN (IPv4) / hand-built kernel VXLAN: 90.0 % (target ≥ 95 %: not met)\n\
             weft VXLAN (IPv4) / hand-built kernel VXLAN with flanneld's firewall rules: 100.0 %"
        );
        assert!(lines[6].starts_with("| hand-built kernel VXLAN + flanneld's firewall rules"), "{t}");
    }

    #[test]
    fn ipv6_rows_compare_with_the_ipv6_hand_built_path() {
        let rows = vec![
            measured(PathKind::WeftVxlan4, &[9.0]),
            measured(PathKind::WeftVxlan6, &[6.0, 7.0, 8.0]),
            measured(PathKind::HandVxlan4, &[10.0]),
            measured(PathKind::HandVxlan6, &[7.0, 7.0, 7.0]),
            measured(PathKind::HandVxlanRules6, &[7.0]),
            measured(PathKind::Underlay4, &[20.0]),
        ];
        let t = render(&rows, 5);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("| of hand-built VXLAN (same family) |"), "{t}");
        assert!(lines[3].starts_with("| weft VXLAN, IPv6 (pod → pod) | 1450 | 7.00 |"), "{t}");
        assert!(lines[3].contains("| 100.0 % | 35.0 % |"), "{t}");
        assert!(
            lines[5].starts_with("| hand-built kernel VXLAN, IPv6")
                && lines[5].contains("| 100.0 % | 35.0 % |")
        );
        assert!(lines[2].contains("| 90.0 % | 45.0 % |"), "{t}");
        assert_eq!(
            verdict(&rows),
            "weft VXLAN (IPv4) / hand-built kernel VXLAN: 90.0 % (target ≥ 95 %: not met)\n\
             weft VXLAN (IPv6) / hand-built kernel VXLAN (IPv6): 100.0 % (target ≥ 95 %: met)\n\
             weft VXLAN (IPv6) / hand-built kernel VXLAN (IPv6) with flanneld's firewall rules: 100.0 %"
        );
    }

    #[test]
    fn ratios_without_a_reference_are_dashes() {
        let rows = vec![measured(PathKind::WeftHostGw4, &[5.0])];
        let t = render(&rows, 5);
        assert!(t.lines().nth(2).is_some_and(|l| l.contains("| 5.00 | 5.00 | – | – | 0 |")), "{t}");
        assert_eq!(verdict(&rows), "weft VXLAN (IPv4) / hand-built kernel VXLAN: not measured");
    }
}
