//! `cargo xtask vm-test [KERNEL...]`: the privileged tests of connection counting, the
//! cell verdict, telemetry, restarts, live counting, Services and the capability ladder
//! ([`AREAS`]), run inside qemu on each kernel of a matrix, and [`FORCED_AREAS`] once more
//! with the ladder's fallbacks forced ([`FORCED`]). The kernels are Debian's packaged cloud kernels (`6.1`, `6.12`: the newest
//! package of the series, from `apt-get download`), or a vmlinuz path ([`kernel`]). The
//! initramfs ([`image`]) holds the integration-test binary, the agent, the tools the
//! tests call and every library they load; its /init is this very binary ([`init`]),
//! which runs the binary on those areas. [`boot`] runs one VM and reads its results.
mod boot;
mod image;
pub(crate) mod init;
mod kernel;

use anyhow::{Result, bail};

pub(crate) use self::init::{AREAS, FORCED, FORCED_AREAS, FORCED_ENV, VM_ONLY};
use self::{boot::Outcome, image::initramfs};
use crate::util::{build_agent, ok, root, step};

/// The matrix when no kernel is named.
pub(crate) const DEFAULT_KERNELS: &[&str] = &["6.1", "6.12"];

pub(crate) fn vm_test(kernels: &[String]) -> Result<()> {
    let kernels: Vec<String> = if kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|k| (*k).to_owned()).collect()
    } else {
        kernels.to_vec()
    };
    let work = root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    step("build the agent and the VM test binary");
    let agent = build_agent(false)?;
    let tests = image::test_binary()?;
    step("pack the initramfs");
    let image = initramfs(&work, &agent, &tests)?;
    ok(&format!(
        "{} ({:.0} MiB)",
        image.display(),
        std::fs::metadata(&image)?.len() as f64 / 1048576.0
    ));
    let mut outcomes = Vec::new();
    for k in &kernels {
        let vmlinuz = kernel::kernel(k, &work)?;
        let image = image::with_modules(&image, &vmlinuz, &work)?;
        step(&format!("boot {k} ({}) under qemu", vmlinuz.display()));
        let log = work.join(format!("{}.log", k.replace('/', "_")));
        outcomes.push(boot::boot(k, &vmlinuz, &image, &log)?);
    }
    report(&outcomes)
}

/// One line per kernel and per area; fails unless every kernel ran every area's tests
/// and passed them all.
fn report(outcomes: &[Outcome]) -> Result<()> {
    step("kernel matrix");
    let mut failed = Vec::new();
    for o in outcomes {
        let passed = o.areas.iter().filter(|(_, ok, _)| *ok).count();
        println!(
            "    {} ({}): {passed} of {} areas passed, {:.0} s",
            o.kernel,
            if o.release.is_empty() { "did not boot" } else { &o.release },
            init::result_count(),
            o.secs
        );
        for (name, ok, counts) in &o.areas {
            println!("      {name:<18} {} {counts} tests", if *ok { "pass" } else { "FAIL" });
        }
        println!("      {}", if o.summary.is_empty() { "no test result" } else { &o.summary });
        if o.done != Some(true) || passed != init::result_count() {
            failed.push(o.kernel.clone());
        }
    }
    if !failed.is_empty() {
        bail!("the tests failed on {} (logs in target/vm/)", failed.join(", "));
    }
    ok("every kernel passed");
    Ok(())
}
