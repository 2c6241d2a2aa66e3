//! Design decision 3: KVM when it works, else TCG with a warning. An
//! openable `/dev/kvm` is not proof (nested or paravirtual hosts, such as
//! PVM, cannot run ordinary guests), so the probe does what QEMU's
//! `-cpu host` will do first: give a vCPU the host's CPUID and feature
//! MSRs (a PVM host fails here, as QEMU does with "failed to set MSR
//! 0x10a"), then runs a few real guest instructions and expects to see them
//! execute, in a thread with a deadline so that a hanging KVM cannot hang
//! the container.

use std::sync::mpsc;
use std::time::Duration;

use runq_protocol::Accel;

use crate::options::AccelChoice;

const PROBE_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("--accel kvm: KVM cannot run a guest here ({0})")]
    KvmUnusable(String),
    #[error("--nestedvm: {0}")]
    Nested(String),
}

/// Resolve the accelerator to `Kvm` or `Tcg`; `Ok((accel, Some(warning)))`
/// when `auto` fell back to TCG.
pub fn choose(wanted: AccelChoice) -> Result<(Accel, Option<String>), AccelError> {
    match wanted {
        AccelChoice::Tcg => Ok((Accel::Tcg, None)),
        AccelChoice::Kvm => probe()
            .map(|()| (Accel::Kvm, None))
            .map_err(AccelError::KvmUnusable),
        AccelChoice::Auto => match probe() {
            Ok(()) => Ok((Accel::Kvm, None)),
            Err(why) => Ok((
                Accel::Tcg,
                Some(format!(
                    "/dev/kvm: KVM not usable here ({why}); falling back to TCG"
                )),
            )),
        },
    }
}

/// What the host offers for nested virtualisation (`--nestedvm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedHost {
    /// The CPU's virtualisation flag: `vmx` (Intel) or `svm` (AMD).
    pub flag: Option<&'static str>,
    /// `/sys/module/kvm_{intel,amd}/parameters/nested` says yes.
    pub enabled: bool,
}

impl NestedHost {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has = |f: &str| {
            cpuinfo
                .lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|w| w == f))
        };
        let (flag, module) = if has("vmx") {
            (Some("vmx"), "kvm_intel")
        } else if has("svm") {
            (Some("svm"), "kvm_amd")
        } else {
            (None, "kvm")
        };
        let param = std::fs::read_to_string(format!("/sys/module/{module}/parameters/nested"))
            .unwrap_or_default();
        NestedHost {
            flag,
            enabled: matches!(param.trim(), "Y" | "y" | "1"),
        }
    }
}

/// The guest's `-cpu` for `--nestedvm`: the chosen model (else `host`)
/// with the virtualisation flag, or one line saying why it cannot be.
pub fn nested_cpu_model(
    accel: Accel,
    model: Option<&str>,
    host: NestedHost,
) -> Result<String, AccelError> {
    if accel != Accel::Kvm {
        return Err(AccelError::Nested(
            "guests run under TCG here, and nested virtualisation needs KVM".into(),
        ));
    }
    let Some(flag) = host.flag else {
        return Err(AccelError::Nested(
            "the host CPU offers neither VMX nor SVM".into(),
        ));
    };
    if !host.enabled {
        return Err(AccelError::Nested(format!(
            "the host's KVM has nested virtualisation off (module parameter nested of kvm_{})",
            if flag == "vmx" { "intel" } else { "amd" }
        )));
    }
    Ok(format!("{},+{flag}", model.unwrap_or("host")))
}

/// KVM modules that cannot run the stock guest kernels runq boots, even
/// though simple probe guests run on them.
const INCAPABLE_KVM: &[(&str, &str)] = &[(
    "/sys/module/kvm_pvm",
    "this host's KVM is PVM (module kvm_pvm), which runs only PVM-enabled guest kernels",
)];

fn probe() -> Result<(), String> {
    if let Some((_, why)) = INCAPABLE_KVM
        .iter()
        .find(|(p, _)| std::path::Path::new(p).exists())
    {
        return Err(why.to_string());
    }
    let (tx, rx) = mpsc::channel();
    // A KVM that hangs in KVM_RUN leaves this thread behind; the proxy
    // carries on with TCG and the thread dies with the container.
    std::thread::spawn(move || {
        let _ = tx.send(kvm::run_probe_guest());
    });
    match rx.recv_timeout(PROBE_DEADLINE) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "a probe guest did not finish within {}s",
            PROBE_DEADLINE.as_secs()
        )),
    }
}

#[cfg(target_arch = "x86_64")]
mod kvm {
    use kvm_bindings::{kvm_msr_entry, kvm_userspace_memory_region, Msrs, KVM_MAX_CPUID_ENTRIES};
    use kvm_ioctls::{Kvm, VcpuExit};

    const GUEST_ADDR: u64 = 0x1000;
    /// Real mode: `mov al, 0x42; out 0x10, al; hlt`.
    const CODE: &[u8] = &[0xb0, 0x42, 0xe6, 0x10, 0xf4];

    pub fn run_probe_guest() -> Result<(), String> {
        let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        let mem = Memory::new(0x1000).ok_or("mmap of probe memory failed")?;
        mem.write(CODE);
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: GUEST_ADDR,
            memory_size: 0x1000,
            userspace_addr: mem.addr as u64,
            flags: 0,
        };
        // SAFETY: the region points at `mem`, a private anonymous mapping
        // of exactly memory_size bytes that outlives `vm` (dropped later in
        // this function, after the VM).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        set_feature_msrs(&kvm, &vcpu)?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        regs.rip = GUEST_ADDR;
        regs.rflags = 2;
        vcpu.set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        let result = match vcpu.run() {
            Ok(VcpuExit::IoOut(0x10, data)) if data == [0x42] => Ok(()),
            Ok(other) => Err(format!("probe guest exited unexpectedly: {other:?}")),
            Err(e) => Err(format!("KVM_RUN: {e}")),
        };
        drop(vcpu);
        drop(vm);
        drop(mem);
        result
    }

    /// Load every feature MSR the host reports into the vCPU, one by one
    /// so the error names the MSR QEMU would trip over.
    fn set_feature_msrs(kvm: &Kvm, vcpu: &kvm_ioctls::VcpuFd) -> Result<(), String> {
        let list = kvm
            .get_msr_feature_index_list()
            .map_err(|e| format!("KVM_GET_MSR_FEATURE_INDEX_LIST: {e}"))?;
        for &index in list.as_slice() {
            let entry = kvm_msr_entry {
                index,
                ..Default::default()
            };
            let mut msrs = Msrs::from_entries(&[entry]).map_err(|e| format!("MSR list: {e:?}"))?;
            match kvm.get_msrs(&mut msrs) {
                Ok(1) => {}
                _ => continue, // not readable as a feature MSR: QEMU skips it too
            }
            match vcpu.set_msrs(&msrs) {
                Ok(1) => {}
                _ => return Err(format!("failed to set MSR {index:#x}")),
            }
        }
        Ok(())
    }

    struct Memory {
        addr: *mut libc::c_void,
        len: usize,
    }

    impl Memory {
        fn new(len: usize) -> Option<Self> {
            // SAFETY: anonymous private mapping, no file or address hint.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            (addr != libc::MAP_FAILED).then_some(Memory { addr, len })
        }

        fn write(&self, bytes: &[u8]) {
            assert!(bytes.len() <= self.len);
            // SAFETY: `addr` is a live writable mapping of `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.addr.cast(), bytes.len()) }
        }
    }

    impl Drop for Memory {
        fn drop(&mut self) {
            // SAFETY: unmapping the mapping created in `new`, once.
            unsafe { libc::munmap(self.addr, self.len) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kvm {
    /// On s390x the KVM probe is a KVM_CREATE_VM: the failure modes seen
    /// on nested x86 hosts do not apply.
    pub fn run_probe_guest() -> Result<(), String> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(|_| ())
            .map_err(|e| format!("open /dev/kvm: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nestedvm_needs_kvm_the_flag_and_nested_on() {
        let on = NestedHost {
            flag: Some("vmx"),
            enabled: true,
        };
        assert_eq!(nested_cpu_model(Accel::Kvm, None, on).unwrap(), "host,+vmx");
        assert_eq!(
            nested_cpu_model(
                Accel::Kvm,
                Some("max"),
                NestedHost {
                    flag: Some("svm"),
                    ..on
                }
            )
            .unwrap(),
            "max,+svm"
        );
        let e = nested_cpu_model(Accel::Tcg, None, on)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--nestedvm: guests run under TCG"), "{e}");
        let off = NestedHost {
            enabled: false,
            ..on
        };
        assert!(nested_cpu_model(Accel::Kvm, None, off)
            .unwrap_err()
            .to_string()
            .contains("kvm_intel"));
        let none = NestedHost {
            flag: None,
            enabled: true,
        };
        assert!(nested_cpu_model(Accel::Kvm, None, none).is_err());
    }
}
