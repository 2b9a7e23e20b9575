//! Cost of one masquerade ADD and DEL per backend, in a throwaway `wtfw…` namespace (root).
//! `cargo run --release -p weft-common --example masq_bench [iterations]`

use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use weft_common::firewall::{setup_masquerade, teardown_masquerade, BackendChoice, MasqTarget};
use weft_common::netns::NetNs;

/// A namespace made with `ip netns add`, deleted on drop.
struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let lab = Lab(format!("wtfwbench{}", std::process::id()));
    let made = std::process::Command::new("ip").args(["netns", "add", &lab.0]).status().expect("run ip");
    assert!(made.success(), "ip netns add failed (needs root)");
    let ns = NetNs::open(format!("/run/netns/{}", lab.0)).expect("open lab netns");
    let _guard = ns.enter().expect("enter lab netns");
    let v4: Vec<IpNetwork> = vec!["198.19.1.2/24".parse().expect("addr")];
    let dual: Vec<IpNetwork> =
        vec!["198.19.1.2/24".parse().expect("addr"), "fd00:77::2/64".parse().expect("addr")];
    for (backend, name) in [(BackendChoice::Iptables, "iptables"), (BackendChoice::Nftables, "nftables")] {
        for (addrs, label) in [(v4.as_slice(), "v4"), (dual.as_slice(), "dual")] {
            let (mut add, mut del, mut del_empty) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            for i in 0..n {
                let cid = format!("bench{i}");
                let t = MasqTarget { network: "wtfwnet", container_id: &cid, ifname: "eth0" };
                let s = Instant::now();
                setup_masquerade(backend, &t, addrs).expect("setup");
                add += s.elapsed();
                let s = Instant::now();
                teardown_masquerade(&t, addrs).expect("teardown");
                del += s.elapsed();
                let s = Instant::now();
                teardown_masquerade(&t, &[]).expect("teardown again");
                del_empty += s.elapsed();
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(n);
            println!(
                "{name:8} {label:4}: setup {:6.2} ms  teardown {:6.2} ms  teardown-nothing-left(no addrs) {:6.2} ms",
                ms(add),
                ms(del),
                ms(del_empty)
            );
        }
    }
}
