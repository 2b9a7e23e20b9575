//! [`SharedFake`]: one [`FakeDataplane`] the daemon drives while the test looks at it.

use std::cell::RefCell;
use std::rc::Rc;

use ipnetwork::Ipv4Network;

use super::FakeDataplane;
use crate::{
    ApplyReport, Dataplane, DataplaneError, DeviceInfo, KernelRoute, KernelState, Mac, NetOp, VxlanSpec,
};

/// A handle on one [`FakeDataplane`]; clones share it. The daemon owns its dataplane, so a
/// test gives it one clone and inspects or tampers through another (single-threaded:
/// `tokio::task::LocalSet`).
#[derive(Debug, Clone)]
pub struct SharedFake {
    inner: Rc<RefCell<FakeDataplane>>,
}

impl Default for SharedFake {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedFake {
    /// A handle on [`FakeDataplane::new`].
    pub fn new() -> Self {
        Self::from(FakeDataplane::new())
    }

    /// Runs `f` on the fake (inspect or tamper); not to be called from inside another `with`.
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeDataplane) -> T) -> T {
        f(&mut self.inner.borrow_mut())
    }
}

impl From<FakeDataplane> for SharedFake {
    fn from(fake: FakeDataplane) -> Self {
        SharedFake { inner: Rc::new(RefCell::new(fake)) }
    }
}

// Each method borrows only for its synchronous body: no borrow is held across an await.
impl Dataplane for SharedFake {
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        self.with(|f| f.ensure_device_now(spec, mac_hint))
    }

    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        self.with(|f| f.apply_now(ops))
    }

    async fn dump(&mut self) -> Result<KernelState, DataplaneError> {
        self.with(FakeDataplane::dump_now)
    }

    async fn dump_routes(&mut self) -> Result<KernelState, DataplaneError> {
        Ok(self.with(FakeDataplane::dump_routes_now))
    }

    async fn route_to(&mut self, dst: std::net::IpAddr) -> Result<Option<KernelRoute>, DataplaneError> {
        Ok(self.with(|f| f.route_to_now(dst)))
    }

    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        self.with(|f| f.ensure_blackhole_now(dst))
    }

    async fn ensure_no_device(&mut self, underlay_index: u32) -> Result<Vec<String>, DataplaneError> {
        Ok(self.with(|f| f.ensure_no_device_now(underlay_index)))
    }

    async fn devices_up(&mut self) -> Result<bool, DataplaneError> {
        Ok(self.with(|f| !f.devices_down))
    }
}
