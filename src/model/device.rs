//! Where a model runs (`--device`): `cpu` is the hand-written engine (the CPU fast path);
//! `candle-cpu`, `cuda[:N]` and `metal[:N]` run the candle forward of the `ares-device` crate on
//! that device (`candle-cpu` lets anyone check the device path without a GPU). Spellings follow
//! candle's examples and mistral.rs (`cuda:0`).

use std::fmt;
use std::str::FromStr;

pub use ares_device::DeviceKind;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The hand-written CPU engine.
    #[default]
    Cpu,
    /// The candle forward on a candle device.
    Candle(DeviceKind),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => {
                let i: usize = i
                    .parse()
                    .map_err(|_| format!("device `{s}`: `{i}` is not a device index"))?;
                (n, Some(i))
            }
            None => (s, None),
        };
        let idx = index.unwrap_or(0);
        match (name, index) {
            ("cpu", None) => Ok(Device::Cpu),
            ("candle-cpu", None) => Ok(Device::Candle(DeviceKind::Cpu)),
            ("cuda", _) => Ok(Device::Candle(DeviceKind::Cuda(idx))),
            ("metal", _) => Ok(Device::Candle(DeviceKind::Metal(idx))),
            _ => Err(format!(
                "unknown device `{s}` (expected cpu, candle-cpu, cuda, cuda:N, metal or metal:N)"
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Candle(k) => write!(f, "{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for s in ["cpu", "candle-cpu", "cuda:0", "cuda:3", "metal:0"] {
            assert_eq!(s.parse::<Device>().map(|d| d.to_string()), Ok(s.into()));
        }
        assert_eq!("cuda".parse(), Ok(Device::Candle(DeviceKind::Cuda(0))));
        assert_eq!("metal".parse(), Ok(Device::Candle(DeviceKind::Metal(0))));
        assert!("gpu"
            .parse::<Device>()
            .unwrap_err()
            .contains("unknown device"));
        assert!("cuda:x".parse::<Device>().is_err());
        assert!("cpu:1".parse::<Device>().is_err());
    }
}
