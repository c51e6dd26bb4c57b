//! Deterministic checks against a fake `/sys` + `/proc` tree in a temp dir,
//! with the live-only facts ([`Host`]) supplied by hand.

use std::path::Path;

use weir_tuning::disk::magic;
use weir_tuning::io_uring::grade;
use weir_tuning::{apply, run_checks_with, ApplyOutcome, Fix, Host, Memlock, Profile, Report, StateFs, Status, TuneOptions, UringProbe, CHECK_IDS};

const MIB: u64 = 1 << 20;

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    /// A machine tuned the way the latency profile wants: 4 CPUs, 1-3
    /// isolated with nohz_full, performance governor, IRQs on CPU 0, THP
    /// madvise, no swap, io_uring enabled, NVMe with `none`.
    fn good() -> Fake {
        let f = Fake {
            dir: tempfile::tempdir().unwrap(),
        };
        f.put("sys/devices/system/cpu/online", "0-3\n");
        f.put("sys/devices/system/cpu/isolated", "1-3\n");
        f.put(
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p1 isolcpus=managed_irq,domain,1-3 nohz_full=1-3 rcu_nocbs=1-3\n",
        );
        for cpu in 0..4 {
            f.governor(cpu, "performance");
            f.put(
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_available_governors"),
                "performance powersave\n",
            );
        }
        let cs = "sys/devices/system/clocksource/clocksource0";
        f.put(&format!("{cs}/current_clocksource"), "tsc\n");
        f.put(&format!("{cs}/available_clocksource"), "tsc hpet acpi_pm \n");
        f.irq(10, "0");
        f.irq(11, "0");
        f.put("proc/irq/default_smp_affinity", "1\n");
        f.put(
            "proc/meminfo",
            "MemTotal:       16384000 kB\nMemFree:        1000 kB\nSwapTotal:             0 kB\n",
        );
        f.put("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
        f.put("sys/kernel/mm/transparent_hugepage/defrag", "always defer [madvise] never\n");
        f.put("proc/sys/vm/swappiness", "1\n");
        f.put("proc/sys/kernel/io_uring_disabled", "0\n");
        f.put("proc/sys/kernel/osrelease", "6.8.0-test\n");
        f.put("sys/dev/block/259:0/queue/scheduler", "[none] mq-deadline kyber\n");
        f.put("sys/dev/block/259:0/queue/rotational", "0\n");
        f.put("sys/block/nvme0n1/queue/scheduler", "[none] mq-deadline kyber\n");
        f.put("sys/block/nvme0n1/queue/rotational", "0\n");
        f.put("sys/block/loop0/queue/scheduler", "[bfq] none\n");
        f
    }

    fn empty() -> Fake {
        Fake {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap()
    }

    fn governor(&self, cpu: usize, g: &str) {
        self.put(&format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"), &format!("{g}\n"));
    }

    fn irq(&self, n: u32, list: &str) {
        self.put(&format!("proc/irq/{n}/smp_affinity_list"), &format!("{list}\n"));
    }

    fn opts(&self, profile: Profile) -> TuneOptions {
        TuneOptions {
            profile,
            state_dir: "/var/lib/weir".into(),
            cores: None,
            sysfs_root: self.dir.path().to_path_buf(),
        }
    }

    fn run(&self, profile: Profile, host: &Host) -> Report {
        run_checks_with(&self.opts(profile), host)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

fn good_host() -> Host {
    Host {
        memlock: Ok(Memlock { soft: None, hard: None }),
        cap_ipc_lock: Some(false),
        uring: grade(|_| true),
        state_fs: Ok(StateFs {
            checked: "/var/lib/weir".into(),
            exists: true,
            magic: magic::XFS,
            dev_major: 259,
            dev_minor: 0,
        }),
    }
}

fn status(r: &Report, id: &str) -> Status {
    r.get(id).unwrap_or_else(|| panic!("no check {id}")).status
}

fn ids(r: &Report) -> Vec<&str> {
    r.checks.iter().map(|c| c.id.as_str()).collect()
}

#[test]
fn tuned_machine_is_all_ok() {
    let f = Fake::good();
    let r = f.run(Profile::Latency, &good_host());
    assert_eq!(ids(&r), CHECK_IDS);
    for c in &r.checks {
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(!c.can_apply, "{c:?}");
    }
    assert_eq!(r.cores.data, [1, 2, 3]);
    assert_eq!(r.cores.housekeeping, [0]);
    assert_eq!(r.kernel.as_deref(), Some("6.8.0-test"));
    assert!(apply(&r, Profile::Latency).is_empty());
}

#[test]
fn empty_tree_is_unknown_not_panic() {
    let f = Fake::empty();
    let host = Host {
        memlock: Err("getrlimit: nope".into()),
        cap_ipc_lock: None,
        uring: UringProbe::NotRun,
        state_fs: Err("statfs: nope".into()),
    };
    for profile in [Profile::Latency, Profile::Throughput, Profile::Edge] {
        let r = f.run(profile, &host);
        assert_eq!(ids(&r), CHECK_IDS);
        for id in [
            "cpu.count",
            "cpu.governor",
            "cpu.clocksource",
            "irq.affinity",
            "memory.memlock",
            "memory.thp",
            "memory.swappiness",
            "io_uring.available",
            "io_uring.opcodes",
            "disk.scheduler",
            "disk.state_fs",
        ] {
            assert_eq!(status(&r, id), Status::Unknown, "{id} under {profile}");
        }
        assert!(r.to_text().contains("UNKNOWN"));
    }
}

#[test]
fn powersave_governor_warns_for_latency_and_applies() {
    let f = Fake::good();
    f.governor(2, "powersave");
    let r = f.run(Profile::Latency, &good_host());
    let c = r.get("cpu.governor").unwrap();
    assert_eq!(c.status, Status::Warn);
    assert!(c.found.contains("powersave on 2"), "{}", c.found);
    assert!(c.can_apply);
    assert_eq!(status(&f.run(Profile::Throughput, &good_host()), "cpu.governor"), Status::Warn);
    assert_eq!(status(&f.run(Profile::Edge, &good_host()), "cpu.governor"), Status::Ok);

    let results = apply(&r, Profile::Latency);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].outcome, ApplyOutcome::Applied, "{results:?}");
    assert_eq!(f.read("sys/devices/system/cpu/cpu2/cpufreq/scaling_governor").trim(), "performance");
    assert_eq!(status(&f.run(Profile::Latency, &good_host()), "cpu.governor"), Status::Ok);
}

#[test]
fn governor_without_performance_has_no_fix() {
    let f = Fake::good();
    f.governor(1, "schedutil");
    f.put("sys/devices/system/cpu/cpu1/cpufreq/scaling_available_governors", "schedutil powersave\n");
    let c = f.run(Profile::Latency, &good_host()).get("cpu.governor").unwrap().clone();
    assert_eq!(c.status, Status::Warn);
    assert!(!c.can_apply);
    assert!(c.what_to_do.contains("do not offer performance"));
}

#[test]
fn no_cpufreq_is_unknown() {
    let f = Fake::good();
    std::fs::remove_dir_all(f.root().join("sys/devices/system/cpu/cpu0")).unwrap();
    std::fs::remove_dir_all(f.root().join("sys/devices/system/cpu/cpu1")).unwrap();
    std::fs::remove_dir_all(f.root().join("sys/devices/system/cpu/cpu2")).unwrap();
    std::fs::remove_dir_all(f.root().join("sys/devices/system/cpu/cpu3")).unwrap();
    assert_eq!(status(&f.run(Profile::Latency, &good_host()), "cpu.governor"), Status::Unknown);
}

#[test]
fn thp_always_warns_for_every_profile_and_applies_madvise() {
    let f = Fake::good();
    f.put("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n");
    for profile in [Profile::Latency, Profile::Throughput, Profile::Edge] {
        let r = f.run(profile, &good_host());
        let c = r.get("memory.thp").unwrap();
        assert_eq!(c.status, Status::Warn, "{profile}");
        assert!(c.found.contains("enabled=always"));
        assert!(c.can_apply);
    }
    let r = f.run(Profile::Throughput, &good_host());
    let results = apply(&r, Profile::Throughput);
    assert_eq!(results.len(), 1);
    // A plain file reads back the bare word, which counts as selected.
    assert_eq!(results[0].outcome, ApplyOutcome::Applied, "{results:?}");
    assert_eq!(f.read("sys/kernel/mm/transparent_hugepage/enabled").trim(), "madvise");

    f.put("sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n");
    assert_eq!(status(&f.run(Profile::Latency, &good_host()), "memory.thp"), Status::Ok);
}

#[test]
fn isolation_graded_only_for_latency() {
    let f = Fake::good();
    let c = f.run(Profile::Latency, &good_host()).get("cpu.isolation").unwrap().clone();
    assert_eq!(c.status, Status::Ok);
    assert!(c.found.contains("isolated: 1-3; nohz_full: 1-3"), "{}", c.found);

    f.put("sys/devices/system/cpu/isolated", "\n");
    f.put("proc/cmdline", "root=/dev/sda1 quiet\n");
    let r = f.run(Profile::Latency, &good_host());
    let c = r.get("cpu.isolation").unwrap();
    assert_eq!(c.status, Status::Warn);
    assert!(c.what_to_do.contains("isolcpus=managed_irq,domain,1-3"), "{}", c.what_to_do);
    assert!(!c.can_apply);
    // With nothing isolated, every CPU is a data core and the OS has none.
    assert_eq!(r.cores.data, [0, 1, 2, 3]);
    assert_eq!(status(&r, "cpu.count"), Status::Warn);
    assert_eq!(status(&f.run(Profile::Throughput, &good_host()), "cpu.isolation"), Status::Ok);
    assert_eq!(status(&f.run(Profile::Throughput, &good_host()), "cpu.count"), Status::Ok);
}

#[test]
fn cores_option_shapes_the_plan() {
    let f = Fake::good();
    f.put("sys/devices/system/cpu/isolated", "\n");
    let mut opts = f.opts(Profile::Latency);
    opts.cores = Some(2);
    let r = run_checks_with(&opts, &good_host());
    assert_eq!(r.cores.data, [2, 3]);
    assert_eq!(r.cores.housekeeping, [0, 1]);
    assert_eq!(status(&r, "cpu.count"), Status::Ok);

    opts.cores = Some(8);
    let r = run_checks_with(&opts, &good_host());
    assert_eq!(status(&r, "cpu.count"), Status::Fail);
}

#[test]
fn irqs_on_data_cores_warn_and_move_to_housekeeping() {
    let f = Fake::good();
    f.irq(12, "0-3");
    f.irq(13, "2");
    f.put("proc/irq/default_smp_affinity", "f\n");
    let r = f.run(Profile::Latency, &good_host());
    let c = r.get("irq.affinity").unwrap();
    assert_eq!(c.status, Status::Warn);
    assert!(c.found.starts_with("2 of 4 IRQs may run on data cores 1-3 (IRQ 12,13)"), "{}", c.found);
    let Some(Fix::WriteFiles { writes }) = &c.fix else { panic!("no fix: {c:?}") };
    assert_eq!(writes.len(), 3);
    assert_eq!(status(&f.run(Profile::Throughput, &good_host()), "irq.affinity"), Status::Ok);

    let results = apply(&r, Profile::Latency);
    assert!(results.iter().all(|r| r.outcome == ApplyOutcome::Applied), "{results:?}");
    assert_eq!(f.read("proc/irq/12/smp_affinity_list").trim(), "0");
    assert_eq!(f.read("proc/irq/default_smp_affinity").trim(), "1");
    assert_eq!(status(&f.run(Profile::Latency, &good_host()), "irq.affinity"), Status::Ok);
}

#[test]
fn irqbalance_is_mentioned() {
    let f = Fake::good();
    f.irq(12, "0-3");
    f.put("proc/4242/comm", "irqbalance\n");
    let c = f.run(Profile::Latency, &good_host()).get("irq.affinity").unwrap().clone();
    assert!(c.found.contains("irqbalance running"));
    assert!(c.what_to_do.contains("IRQBALANCE_BANNED_CPULIST=1-3"));
}

#[test]
fn irqs_without_housekeeping_core_warn_without_fix() {
    let f = Fake::good();
    f.put("sys/devices/system/cpu/isolated", "\n");
    let c = f.run(Profile::Latency, &good_host()).get("irq.affinity").unwrap().clone();
    assert_eq!(c.status, Status::Warn);
    assert!(!c.can_apply);
}

fn with_memlock(soft: u64, hard: u64) -> Host {
    Host {
        memlock: Ok(Memlock {
            soft: Some(soft),
            hard: Some(hard),
        }),
        ..good_host()
    }
}

#[test]
fn memlock_grades() {
    let f = Fake::good(); // 3 data cores → 3 × 3 × 10 MiB = 90 MiB.
    let c = f
        .run(Profile::Latency, &with_memlock(64 << 10, 64 << 10))
        .get("memory.memlock")
        .unwrap()
        .clone();
    assert_eq!(c.status, Status::Fail);
    assert!(c.can_apply);

    let c = f.run(Profile::Latency, &with_memlock(8 * MIB, 8 * MIB)).get("memory.memlock").unwrap().clone();
    assert_eq!(c.status, Status::Warn);
    assert!(c.found.contains("90 MiB needed"), "{}", c.found);
    assert_eq!(
        c.fix,
        Some(Fix::RaiseMemlock {
            soft: 90 * MIB,
            hard: 90 * MIB
        })
    );

    assert_eq!(
        status(&f.run(Profile::Latency, &with_memlock(128 * MIB, 128 * MIB)), "memory.memlock"),
        Status::Ok
    );

    let privileged = Host {
        cap_ipc_lock: Some(true),
        ..with_memlock(8 * MIB, 8 * MIB)
    };
    assert_eq!(status(&f.run(Profile::Latency, &privileged), "memory.memlock"), Status::Ok);
}

#[test]
fn edge_memlock_suggests_small_io_memory() {
    let f = Fake::good();
    f.put("sys/devices/system/cpu/online", "0-1\n");
    f.put("sys/devices/system/cpu/isolated", "\n");
    f.put("proc/meminfo", "MemTotal:         524288 kB\nSwapTotal:        0 kB\n");
    // 512 MiB RAM, 2 executors → io_memory 832 KiB → 4.9 MiB locked.
    let r = f.run(Profile::Edge, &with_memlock(2 * MIB, 2 * MIB));
    let c = r.get("memory.memlock").unwrap();
    assert_eq!(c.status, Status::Warn);
    assert!(c.found.contains("io_memory 832 KiB"), "{}", c.found);
    assert!(c.what_to_do.contains("set io_memory to 320 KiB per executor"), "{}", c.what_to_do);
    // 8 MiB covers the edge budget (it would not cover 2 × 3 × 10 MiB).
    assert_eq!(status(&f.run(Profile::Edge, &with_memlock(8 * MIB, 8 * MIB)), "memory.memlock"), Status::Ok);
}

#[test]
fn swappiness_matters_only_with_swap() {
    let f = Fake::good();
    f.put("proc/sys/vm/swappiness", "60\n");
    assert_eq!(status(&f.run(Profile::Latency, &good_host()), "memory.swappiness"), Status::Ok);
    f.put("proc/meminfo", "MemTotal:       16384000 kB\nSwapTotal:       2097152 kB\n");
    let r = f.run(Profile::Latency, &good_host());
    assert_eq!(status(&r, "memory.swappiness"), Status::Warn);
    assert_eq!(status(&f.run(Profile::Edge, &good_host()), "memory.swappiness"), Status::Ok);
    let results = apply(&r, Profile::Latency);
    assert_eq!(results[0].outcome, ApplyOutcome::Applied);
    assert_eq!(f.read("proc/sys/vm/swappiness").trim(), "1");
}

#[test]
fn io_uring_disabled_and_missing_opcodes() {
    let f = Fake::good();
    f.put("proc/sys/kernel/io_uring_disabled", "2\n");
    let host = Host {
        uring: UringProbe::SetupFailed {
            errno: Some(libc_eperm()),
            error: "io_uring_setup: Operation not permitted".into(),
        },
        ..good_host()
    };
    let r = f.run(Profile::Latency, &host);
    assert_eq!(status(&r, "io_uring.available"), Status::Fail);
    assert!(r.get("io_uring.available").unwrap().what_to_do.contains("io_uring_disabled=0"));
    assert_eq!(status(&r, "io_uring.opcodes"), Status::Unknown);

    let host = Host {
        uring: grade(|c| c != io_uring::opcode::SendZc::CODE),
        ..good_host()
    };
    let r = f.run(Profile::Latency, &host);
    assert_eq!(status(&r, "io_uring.opcodes"), Status::Warn);
    assert!(r.get("io_uring.opcodes").unwrap().found.contains("missing optional: SendZc"));
}

fn libc_eperm() -> i32 {
    1
}

#[test]
fn disk_scheduler_and_filesystem() {
    let f = Fake::good();
    f.put("sys/dev/block/259:0/queue/scheduler", "mq-deadline kyber [bfq] none\n");
    let r = f.run(Profile::Throughput, &good_host());
    let c = r.get("disk.scheduler").unwrap();
    assert_eq!(c.status, Status::Warn);
    assert!(c.found.contains("259:0: bfq (ssd/nvme)"), "{}", c.found);

    // State on tmpfs: no block device, so every physical disk is graded
    // (loop devices are skipped).
    let tmpfs = Host {
        state_fs: Ok(StateFs {
            checked: "/dev/shm".into(),
            exists: true,
            magic: magic::TMPFS,
            dev_major: 0,
            dev_minor: 40,
        }),
        ..good_host()
    };
    let r = f.run(Profile::Latency, &tmpfs);
    let c = r.get("disk.scheduler").unwrap();
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(c.found.contains("nvme0n1: none") && !c.found.contains("loop0"), "{}", c.found);
    assert_eq!(status(&r, "disk.state_fs"), Status::Warn);

    let ext4 = Host {
        state_fs: Ok(StateFs {
            magic: magic::EXT4,
            ..good_host().state_fs.unwrap()
        }),
        ..good_host()
    };
    assert_eq!(status(&f.run(Profile::Latency, &ext4), "disk.state_fs"), Status::Ok);
    let overlay = Host {
        state_fs: Ok(StateFs {
            magic: magic::OVERLAY,
            ..good_host().state_fs.unwrap()
        }),
        ..good_host()
    };
    assert_eq!(status(&f.run(Profile::Latency, &overlay), "disk.state_fs"), Status::Warn);
}

#[test]
fn json_round_trips_and_text_has_every_check() {
    let f = Fake::good();
    f.governor(0, "powersave");
    let r = f.run(Profile::Latency, &good_host());
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["profile"], "latency");
    assert_eq!(v["checks"][2]["status"], "warn");
    assert_eq!(v["checks"][2]["fix"]["kind"], "write_files");

    let text = r.to_text();
    for id in CHECK_IDS {
        assert!(text.contains(id), "{id} missing from\n{text}");
    }
    assert!(text.contains("[--apply can fix]"));
    assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");
    assert!(text.contains("11 ok, 1 warn, 0 fail, 0 unknown; 1 fixable with --apply"), "{text}");
}

#[test]
fn apply_reports_failures_without_panicking() {
    let f = Fake::good();
    f.governor(1, "powersave");
    let r = f.run(Profile::Latency, &good_host());
    // Wrong profile: nothing changes.
    let skipped = apply(&r, Profile::Edge);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].outcome, ApplyOutcome::Skipped);
    assert!(f.read("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor").contains("powersave"));

    // The file vanished between check and apply.
    std::fs::remove_file(f.root().join("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor")).unwrap();
    let failed = apply(&r, Profile::Latency);
    assert_eq!(failed[0].outcome, ApplyOutcome::Failed);
    assert!(failed[0].message.contains("does not exist"), "{failed:?}");
    assert!(!f.root().join("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor").exists());

    // A directory where a file should be: an error, not a panic.
    std::fs::create_dir(f.root().join("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor")).unwrap();
    let failed = apply(&r, Profile::Latency);
    assert_eq!(failed[0].outcome, ApplyOutcome::Failed, "{failed:?}");
}

#[test]
fn apply_memlock_to_current_value_succeeds() {
    let current = weir_tuning::memory::current_memlock().unwrap();
    let mut r = Fake::good().run(Profile::Latency, &good_host());
    let c = r.checks.iter_mut().find(|c| c.id == "memory.memlock").unwrap();
    c.status = Status::Warn;
    c.can_apply = true;
    // Setting the limits to what they are is always allowed.
    c.fix = Some(Fix::RaiseMemlock {
        soft: current.soft.unwrap_or(u64::MAX),
        hard: current.hard.unwrap_or(u64::MAX),
    });
    let results = apply(&r, Profile::Latency);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, ApplyOutcome::Applied, "{results:?}");
    assert_eq!(weir_tuning::memory::current_memlock().unwrap(), current);
}

#[test]
fn partition_resolves_to_its_disk() {
    let f = Fake::good();
    let disk = "sys/devices/pci0000:00/virtio1/block/vda";
    f.put(&format!("{disk}/queue/scheduler"), "none [mq-deadline] kyber bfq\n");
    f.put(&format!("{disk}/queue/rotational"), "0\n");
    f.put(&format!("{disk}/vda1/partition"), "1\n");
    std::os::unix::fs::symlink("../../devices/pci0000:00/virtio1/block/vda/vda1", f.root().join("sys/dev/block/254:1")).unwrap();
    let host = Host {
        state_fs: Ok(StateFs {
            checked: "/".into(),
            exists: true,
            magic: magic::EXT4,
            dev_major: 254,
            dev_minor: 1,
        }),
        ..good_host()
    };
    let c = f.run(Profile::Latency, &host).get("disk.scheduler").unwrap().clone();
    assert_eq!(c.status, Status::Ok);
    assert_eq!(c.found, "state dir's disk: vda: mq-deadline (ssd/nvme)");
}

#[test]
fn slow_clocksource_warns() {
    let f = Fake::good();
    f.put("sys/devices/system/clocksource/clocksource0/current_clocksource", "hpet\n");
    let c = f.run(Profile::Edge, &good_host()).get("cpu.clocksource").unwrap().clone();
    assert_eq!(c.status, Status::Warn);
    assert!(c.what_to_do.starts_with("switch to tsc"), "{}", c.what_to_do);
    assert!(!c.can_apply);
}

#[test]
fn cpuset_limits_data_cores() {
    let f = Fake::good();
    f.put("sys/devices/system/cpu/isolated", "\n");
    f.put("proc/self/cgroup", "0::/weir.slice/weir.service\n");
    f.put("sys/fs/cgroup/weir.slice/weir.service/cpuset.cpus.effective", "2-3\n");
    let r = f.run(Profile::Latency, &good_host());
    assert_eq!(r.cores.data, [2, 3]);
    assert_eq!(r.cores.housekeeping, [0, 1]);
    let c = r.get("cpu.count").unwrap();
    assert_eq!(c.status, Status::Ok);
    assert!(c.found.contains("cpuset allows 2-3"), "{}", c.found);

    let mut opts = f.opts(Profile::Latency);
    opts.cores = Some(3);
    assert_eq!(status(&run_checks_with(&opts, &good_host()), "cpu.count"), Status::Fail);

    // cgroup v1 layout.
    f.put("proc/self/cgroup", "4:memory:/x\n3:cpuset:/pinned\n0::/\n");
    f.put("sys/fs/cgroup/cpuset/pinned/cpuset.effective_cpus", "1\n");
    let r = f.run(Profile::Throughput, &good_host());
    assert_eq!(r.cores.data, [1]);
}
