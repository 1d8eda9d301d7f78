//! Cluster mode: the devices every node shares (docs/cluster.md, "Cluster state"). The
//! cluster implements [`SharedDevices`]; device administration writes through it, and each
//! node applies the changes with [`super::Registry::apply_device`].

use futures::future::BoxFuture;
use rand::distr::{Alphanumeric, SampleString};

use super::{Device, RegistryError};

/// A change to a device, re-run on the newest value when another node changed the device at
/// the same moment.
pub type Change<'a> = &'a (dyn Fn(&mut Device) -> Result<(), RegistryError> + Send + Sync);

/// The devices of the cluster.
pub trait SharedDevices: Send + Sync + std::fmt::Debug {
    /// Adds `device` (its iotId given) for every node, then here.
    ///
    /// # Errors
    /// [`RegistryError::DeviceExists`] when the cluster has it; [`RegistryError::Cluster`].
    fn add(&self, device: Device) -> BoxFuture<'_, Result<Device, RegistryError>>;

    /// Changes a device for every node, then here; returns it before and after.
    ///
    /// # Errors
    /// [`RegistryError::NoDevice`]; the change's refusal; [`RegistryError::Cluster`].
    fn modify<'a>(
        &'a self,
        product_key: &'a str,
        name: &'a str,
        change: Change<'a>,
    ) -> BoxFuture<'a, Result<(Device, Device), RegistryError>>;

    /// Deletes a device for every node, then here; returns it.
    ///
    /// # Errors
    /// [`RegistryError::NoDevice`]; [`RegistryError::Cluster`].
    fn delete<'a>(
        &'a self,
        product_key: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Device, RegistryError>>;
}

/// A new iotId, as the registry gives one (the node that creates a device gives it, for every
/// node).
pub fn new_iot_id() -> String {
    super::iot_ids::generate()
}

/// A new device secret: 32 letters and digits.
pub fn new_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}
