//! `shim-manager upgrade-shims`: asks the running server to replace every pod's shim and
//! prints one line per pod as it is done.

use dockpod_proto::manager::manager_client::ManagerClient;
use dockpod_proto::manager::shim_upgrade::Outcome;
use dockpod_proto::manager::{ShimUpgrade, UpgradeShimsRequest};

/// One pod's line.
pub fn line(r: &ShimUpgrade) -> String {
    let pod = format!(
        "{} ({})",
        r.pod,
        r.sandbox_id.get(..12).unwrap_or(&r.sandbox_id)
    );
    match Outcome::try_from(r.outcome) {
        Ok(Outcome::Upgraded) => format!("upgraded {pod}: shim {} -> {}", r.old_pid, r.new_pid),
        Ok(Outcome::Busy) => format!("busy     {pod}: {}; not replaced", r.message),
        _ => format!("failed   {pod}: {}", r.message),
    }
}

pub async fn run(endpoint: &str, force: bool) -> Result<(), String> {
    let socket =
        dockpod_proto::sockets::parse_unix_endpoint(endpoint).map_err(|e| e.to_string())?;
    let mut client = ManagerClient::new(dockpod_proto::sockets::channel(&socket));
    let mut reports = client
        .upgrade_shims(UpgradeShimsRequest { force })
        .await
        .map_err(|e| format!("{}: {}", socket.display(), e.message()))?
        .into_inner();
    let (mut done, mut left) = (0, 0);
    while let Some(report) = reports
        .message()
        .await
        .map_err(|e| format!("upgrade interrupted: {}", e.message()))?
    {
        println!("{}", line(&report));
        if report.outcome == Outcome::Upgraded as i32 {
            done += 1;
        } else {
            left += 1;
        }
    }
    println!("{done} shim(s) replaced, {left} not");
    if left > 0 {
        return Err(format!(
            "{left} pod(s) kept their old shim; run upgrade-shims again"
        ));
    }
    Ok(())
}
