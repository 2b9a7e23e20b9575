//! Reading a dumped rule's expressions (`NFTA_RULE_EXPRESSIONS`) back into [`Expr`], for the
//! kinds our layout uses. ADD compares the shared `postrouting` chain with the reference's three
//! rules this way and refills it only when it differs: a refill deletes rules, and any
//! transaction that deletes makes the kernel's commit wait ~15 ms (and serialises parallel ADDs).
//!
//! Only what decides the rule's meaning is compared (expression kind, payload base/offset/length,
//! comparison operator and data, mask, verdict); registers and attributes the kernel adds to a
//! dump are ignored. Any other expression, operator or flag parses to `None`, so a rule we do not
//! fully recognise is never taken for a correct one.

use super::nfnl::{attrs, be32, cstr, data_value, find};
use super::nfnl_batch::{CmpOp, Expr};
use super::nft_abi::*;

/// The expressions of a rule, from the value of its `NFTA_RULE_EXPRESSIONS` attribute.
pub(crate) fn parse_exprs(buf: &[u8]) -> Option<Vec<Expr>> {
    attrs(buf)
        .into_iter()
        .map(|(kind, elem)| {
            if kind != NFTA_LIST_ELEM {
                return None;
            }
            let elem = attrs(elem);
            let name = find(&elem, NFTA_EXPR_NAME).map(cstr)?;
            let data = find(&elem, NFTA_EXPR_DATA).map(attrs).unwrap_or_default();
            parse_expr(&name, &data)
        })
        .collect()
}

/// The chain a rule jumps or goes to (its `immediate` verdict), whatever its other expressions
/// are: iptables' rules hold x_tables matches this module does not read.
pub(crate) fn verdict_chain(buf: &[u8]) -> Option<String> {
    attrs(buf).into_iter().filter(|(kind, _)| *kind == NFTA_LIST_ELEM).find_map(|(_, elem)| {
        let elem = attrs(elem);
        if find(&elem, NFTA_EXPR_NAME).map(cstr).as_deref() != Some("immediate") {
            return None;
        }
        let data = find(&elem, NFTA_EXPR_DATA).map(attrs).unwrap_or_default();
        match parse_expr("immediate", &data)? {
            Expr::Jump(chain) | Expr::Goto(chain) => Some(chain),
            _ => None,
        }
    })
}

fn parse_expr(name: &str, a: &[(u16, &[u8])]) -> Option<Expr> {
    let u32_of = |t: u16| find(a, t).and_then(be32);
    match name {
        // NFTA_META_KEY
        "meta" => (u32_of(2)? == NFT_META_NFPROTO).then_some(Expr::MetaNfproto),
        // NFTA_PAYLOAD_BASE, _OFFSET, _LEN
        "payload" => (u32_of(2)? == NFT_PAYLOAD_NETWORK_HEADER)
            .then(|| Some(Expr::Payload { offset: u32_of(3)?, len: u32_of(4)? }))
            .flatten(),
        "bitwise" => {
            // NFTA_BITWISE_OP (newer kernels dump it; absent means the boolean form).
            if u32_of(6).unwrap_or(NFT_BITWISE_BOOL) != NFT_BITWISE_BOOL {
                return None;
            }
            let mask = find(a, 4).and_then(data_value)?; // NFTA_BITWISE_MASK
            let xor = find(a, 5).and_then(data_value)?; // NFTA_BITWISE_XOR
            xor.iter().all(|&b| b == 0).then(|| Expr::Bitwise { mask: mask.to_vec() })
        }
        "cmp" => {
            let op = match u32_of(2)? {
                0 => CmpOp::Eq,
                1 => CmpOp::Neq,
                _ => return None,
            };
            let data = find(a, 3).and_then(data_value)?; // NFTA_CMP_DATA
            Some(Expr::Cmp { op, data: data.to_vec() })
        }
        "immediate" => {
            // Only verdicts: NFTA_IMMEDIATE_DREG 0 is the verdict register.
            if u32_of(1)? != 0 {
                return None;
            }
            let data = attrs(find(a, 2)?); // NFTA_IMMEDIATE_DATA
            let verdict = attrs(find(&data, NFTA_DATA_VERDICT)?);
            let code = find(&verdict, NFTA_VERDICT_CODE)
                .and_then(be32)
                .map(|c| i32::from_be_bytes(c.to_be_bytes()))?;
            match (code, find(&verdict, NFTA_VERDICT_CHAIN).map(cstr)) {
                (NFT_RETURN, None) => Some(Expr::Return),
                (NFT_JUMP, Some(chain)) => Some(Expr::Jump(chain)),
                (NFT_GOTO, Some(chain)) => Some(Expr::Goto(chain)),
                _ => None,
            }
        }
        // Flags or a port range would change the masquerade; the plain form dumps nothing.
        "masq" => a.is_empty().then_some(Expr::Masq),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nfnl_batch::Batch;

    fn sample() -> Vec<Expr> {
        vec![
            Expr::MetaNfproto,
            Expr::Cmp { op: CmpOp::Eq, data: vec![2] },
            Expr::Payload { offset: 16, len: 4 },
            Expr::Bitwise { mask: vec![0xf0, 0, 0, 0] },
            Expr::Cmp { op: CmpOp::Neq, data: vec![0xe0, 0, 0, 0] },
            Expr::Return,
            Expr::Goto("masq_checks".into()),
            Expr::Jump("CNI-abc".into()),
            Expr::Masq,
        ]
    }

    #[test]
    fn what_we_write_reads_back_the_same() {
        assert_eq!(parse_exprs(&Batch::encode_exprs(&sample())), Some(sample()));
        assert_eq!(parse_exprs(&[]), Some(Vec::new()));
    }

    /// Attribute `t` with `v` (an attribute list is a concatenation of these).
    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut b = u16::try_from(4 + v.len()).unwrap().to_ne_bytes().to_vec();
        b.extend_from_slice(&t.to_ne_bytes());
        b.extend_from_slice(v);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn elem(name: &str, data: &[u8]) -> Vec<u8> {
        let mut inner = attr(NFTA_EXPR_NAME, format!("{name}\0").as_bytes());
        inner.extend(attr(NFTA_EXPR_DATA, data));
        attr(NFTA_LIST_ELEM, &inner)
    }

    #[test]
    fn unknown_or_altered_expressions_are_not_recognised() {
        // An expression kind we never write.
        assert_eq!(parse_exprs(&elem("counter", &[])), None);
        // masq with flags (e.g. fully-random).
        assert_eq!(parse_exprs(&elem("masq", &attr(1, &4u32.to_be_bytes()))), None);
        // meta of another key (iifname = 6).
        assert_eq!(parse_exprs(&elem("meta", &attr(2, &6u32.to_be_bytes()))), None);
        // A cmp with the "less than" operator.
        let mut cmp = attr(1, &1u32.to_be_bytes());
        cmp.extend(attr(2, &2u32.to_be_bytes()));
        cmp.extend(attr(3, &attr(NFTA_DATA_VALUE, &[1])));
        assert_eq!(parse_exprs(&elem("cmp", &cmp)), None);
        // An accept verdict (code 1) instead of return.
        let verdict = attr(NFTA_DATA_VERDICT, &attr(NFTA_VERDICT_CODE, &1i32.to_be_bytes()));
        let mut imm = attr(1, &0u32.to_be_bytes());
        imm.extend(attr(2, &verdict));
        assert_eq!(parse_exprs(&elem("immediate", &imm)), None);
        // Truncated input never panics.
        let good = Batch::encode_exprs(&sample());
        for n in 0..good.len() {
            let _ = parse_exprs(&good[..n]);
        }
    }

    /// iptables' rules: the jump target is found behind expressions this module does not read
    /// (x_tables matches, counters), and only an `immediate` verdict counts.
    #[test]
    fn verdict_chain_reads_past_unknown_expressions() {
        let mut rule = elem("match", &attr(1, b"comment\0"));
        rule.extend(elem("counter", &[]));
        rule.extend(Batch::encode_exprs(&[Expr::Jump("CNI-abc".into())]));
        assert_eq!(parse_exprs(&rule), None);
        assert_eq!(verdict_chain(&rule).as_deref(), Some("CNI-abc"));
        assert_eq!(verdict_chain(&Batch::encode_exprs(&[Expr::Goto("x".into())])).as_deref(), Some("x"));
        assert_eq!(verdict_chain(&Batch::encode_exprs(&[Expr::Return, Expr::Masq])), None);
        assert_eq!(verdict_chain(&elem("counter", &[])), None);
        let good = Batch::encode_exprs(&[Expr::Jump("CNI-abc".into())]);
        for n in 0..good.len() {
            let _ = verdict_chain(&good[..n]);
        }
    }
}
