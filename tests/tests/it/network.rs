//! Pod networking: CNI with Debian's reference plugins (each test brings its own network in a
//! private 10.x range, see `dockpod_tests::cni`), host ports, DNS, teardown that frees every
//! address and veth (also when the sandbox container vanished, and when setup fails half-way),
//! and Docker's bridge when no CNI plugin is configured.

use std::io::{Read, Write};
use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::*;
use dockpod_tests::docker::{docker, instance_containers};
use dockpod_tests::docker_proxy::{DockerProxy, Fault, Gate};
use dockpod_tests::front::Front;
use dockpod_tests::registry::{free_port, reserved_port};
use dockpod_tests::wait::wait_until;
use tonic::transport::Channel;
use tonic::Code;

const SECS: Duration = Duration::from_secs(60);

async fn start_front(net: &CniNet) -> Front {
    let args = net.front_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Front::start(&args).await
}

/// The shim's verbose information about a pod.
async fn verbose_info(mut rt: RuntimeServiceClient<Channel>, id: &str) -> serde_json::Value {
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .expect("verbose status")
        .into_inner();
    serde_json::from_str(&status.info["info"]).expect("info is JSON")
}

/// A container that serves `body` over HTTP on `port` inside its pod.
fn http_server(port: u16, body: &str) -> ContainerConfig {
    let mut config = container_config("web", &["sh", "-c"]);
    config.args = vec![format!(
        "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"
    )];
    config
}

/// GET / from `addr` over plain TCP, or None while nothing answers.
fn http_get(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    reply.contains("200 OK").then_some(reply)
}

#[tokio::test]
async fn cni_pods_get_distinct_ips_reach_each_other_and_get_their_dns() {
    let net = CniNet::new();
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut a = pod_config("cni-a", logs.path());
    a.hostname = "pod-a".into();
    a.dns_config = Some(DnsConfig {
        servers: vec!["10.213.255.10".into()],
        searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into(), "timeout:2".into()],
    });
    let b = pod_config("cni-b", logs.path());
    let (a_id, b_id) = (run_pod(&mut rt, &a).await, run_pod(&mut rt, &b).await);
    let a_ips = pod_ip(&pod_status(&mut rt, &a_id).await);
    let b_ips = pod_ip(&pod_status(&mut rt, &b_id).await);
    assert_eq!(a_ips.len(), 1, "{a_ips:?}");
    assert!(
        net.contains(&a_ips[0]) && net.contains(&b_ips[0]),
        "{a_ips:?} {b_ips:?} in {}",
        net.subnet
    );
    assert_ne!(a_ips, b_ips);
    // host-local recorded the sandbox as the owner, through CNI_CONTAINERID.
    assert!(
        net.owner_of(&a_ips[0]).starts_with(&a_id),
        "{:?}",
        net.owner_of(&a_ips[0])
    );
    assert_eq!(net.veths().len(), 2, "one veth per pod on {}", net.bridge);
    // dockpod records its attachments in the pods' own directories: libcni's cache
    // directory (the front's --cni-cache-dir) stays as libcni left it, here empty.
    assert_eq!(net.cached(), Vec::<String>::new());
    let record = format!("cni-{}-eth0.json", net.name);
    let records = std::fs::read_dir(front.root_dir().join("pods"))
        .expect("pods directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(&record).is_file())
        .count();
    assert_eq!(records, 2, "one attachment record per pod directory");

    let ca = run_container(&mut rt, &a_id, &a, container_config("c", &["sleep", "600"])).await;
    let cb = run_container(&mut rt, &b_id, &b, http_server(8080, "from-b")).await;
    let fetch = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {} 8080",
        b_ips[0]
    );
    wait_until("pod b's server, from pod a", SECS, || {
        let mut rt = rt.clone();
        let (ca, fetch) = (ca.clone(), fetch.clone());
        async move {
            let r = exec(&mut rt, &ca, &["sh", "-c", &fetch]).await;
            String::from_utf8_lossy(&r.stdout)
                .contains("from-b")
                .then_some(())
        }
    })
    .await;
    // Pod a's own address, as its container sees it.
    let own = exec(&mut rt, &ca, &["ip", "-4", "-o", "addr", "show", "eth0"]).await;
    assert!(String::from_utf8_lossy(&own.stdout).contains(&format!("{}/24", a_ips[0])));

    let resolv = String::from_utf8_lossy(
        &exec(&mut rt, &ca, &["cat", "/etc/resolv.conf"])
            .await
            .stdout,
    )
    .into_owned();
    assert!(resolv.contains("nameserver 10.213.255.10"), "{resolv}");
    assert!(
        resolv.contains("search ns.svc.cluster.local svc.cluster.local"),
        "{resolv}"
    );
    assert!(
        resolv.contains("ndots:5") && resolv.contains("timeout:2"),
        "{resolv}"
    );
    let hostname = exec(&mut rt, &ca, &["hostname"]).await;
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "pod-a");
    let hosts = exec(&mut rt, &ca, &["cat", "/etc/hosts"]).await;
    let hosts = String::from_utf8_lossy(&hosts.stdout).into_owned();
    assert!(
        hosts.contains(&format!("{}\tpod-a", a_ips[0])),
        "the pod's name is not in /etc/hosts: {hosts}"
    );
    let _ = cb;

    // CHECK runs on demand, never per status call (it starts the chain's plugins and
    // iptables); verbose status reports the last one: fine as set up, failing once the pod's
    // veth is gone.
    let info = verbose_info(rt.clone(), &a_id).await;
    let unchecked = info["cniCheck"].as_str().unwrap_or_default();
    assert!(unchecked.starts_with("not checked"), "{info}");
    let (passed, said) = front.check_network(&a_id);
    assert!(passed && said.contains("ok"), "{said}");
    let info = verbose_info(rt.clone(), &a_id).await;
    assert_eq!(info["cniCheck"], "ok", "{info}");
    assert_eq!(info["cniNetwork"], net.name.as_str());
    let address = format!("{}/24", a_ips[0]);
    assert_eq!(info["cniResult"]["ips"][0]["address"], address.as_str());
    let veth = info["cniResult"]["interfaces"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|i| i["sandbox"].is_null() && i["name"] != net.bridge.as_str())
        })
        .and_then(|i| i["name"].as_str())
        .expect("the pod's host-side veth")
        .to_string();
    let deleted = std::process::Command::new("ip")
        .args(["link", "delete", &veth])
        .status()
        .expect("ip link delete");
    assert!(deleted.success());
    let info = verbose_info(rt.clone(), &a_id).await;
    assert_eq!(info["cniCheck"], "ok", "until checked again: {info}");
    let (passed, said) = front.check_network(&a_id);
    assert!(!passed, "CHECK passed without the pod's veth: {said}");
    let info = verbose_info(rt.clone(), &a_id).await;
    assert_ne!(info["cniCheck"], "ok", "{info}");

    for id in [&a_id, &b_id] {
        remove_pod(&mut rt, id).await;
    }
    assert!(
        net.allocated().is_empty(),
        "addresses left: {:?}",
        net.allocated()
    );
    assert!(net.veths().is_empty(), "veths left: {:?}", net.veths());
    assert!(net.cached().is_empty(), "cache left: {:?}", net.cached());
}

#[tokio::test]
async fn a_host_port_on_loopback_reaches_the_pod_through_portmap() {
    let net = CniNet::new();
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (reservation, host_port) = reserved_port();
    let mut pod = pod_config("cni-hostport", logs.path());
    pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: "127.0.0.1".into(),
    }];
    let id = run_pod(&mut rt, &pod).await;
    run_container(&mut rt, &id, &pod, http_server(8080, "through-portmap")).await;
    let addr = format!("127.0.0.1:{host_port}");
    let reply = wait_until("the host port to answer", SECS, || {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || http_get(&addr))
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert!(reply.contains("through-portmap"), "{reply}");

    remove_pod(&mut rt, &id).await;
    // With the pod's rules gone, a connection to the port reaches the test's own listener.
    let connect = std::net::TcpStream::connect(&addr).expect("connect to the freed host port");
    let client = connect.local_addr().expect("the client's address");
    reservation
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let peer = wait_until("the connection at the test's own listener", SECS, || {
        let peer = reservation.accept().ok().map(|(_, peer)| peer);
        async move { peer }
    })
    .await;
    assert_eq!(peer, client);
}

#[tokio::test]
async fn del_frees_the_address_after_the_sandbox_was_removed_and_host_network_skips_cni() {
    let net = CniNet::new();
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("cni-gone", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    assert_eq!(net.allocated().len(), 1);
    docker()
        .await
        .remove_container(
            &id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("docker rm -f the sandbox");
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    assert!(
        net.allocated().is_empty(),
        "address not freed: {:?}",
        net.allocated()
    );
    remove_pod(&mut rt, &id).await;
    assert!(net.cached().is_empty());
    // With its namespace gone, the pod's veth is the kernel's to delete, and the kernel
    // tears network namespaces down in a worker of its own, some time after the last
    // process left: wait for that before counting veths below.
    wait_until(
        "the kernel to delete the removed pod's veth",
        SECS,
        || async { net.veths().is_empty().then_some(()) },
    )
    .await;

    // A host-network pod shares the node's network and is no business of CNI.
    let mut host = pod_config("cni-hostnet", logs.path());
    host_network(&mut host);
    let id = run_pod(&mut rt, &host).await;
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(net.veths().is_empty(), "{:?}", net.veths());
    remove_pod(&mut rt, &id).await;
}

/// StopPodSandbox gives CNI's DEL the network namespace of the sandbox process the shim has
/// held since the sandbox started, with no Docker request on the call's way, and the plugins
/// act inside it: while Docker is held from stopping the sandbox (its namespace still
/// alive), the pod's veth is already gone.
#[tokio::test]
async fn stop_pod_sandbox_deletes_the_network_in_the_held_sandboxs_namespace_without_asking_docker()
{
    let net = CniNet::new();
    let proxy = DockerProxy::start();
    let mut args = net.front_args();
    args.extend(["--docker-endpoint".to_string(), proxy.endpoint()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let front = Front::start(&args).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config(&dockpod_tests::unique("cni-held"), logs.path());
    let id = run_pod(&mut rt, &pod).await;
    assert_eq!(net.veths().len(), 1, "{:?}", net.veths());
    let stop = format!("/containers/{id}/stop");
    let gate = Gate::new();
    proxy.once("POST", &stop, Fault::Hold(gate.clone()));
    let before = proxy.seen().len();
    let stopping = tokio::spawn({
        let (mut rt, id) = (rt.clone(), id.clone());
        async move {
            rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        }
    });
    proxy.arrival("POST", &stop, SECS).await;
    let veths = net.veths();
    let asked = proxy.seen().split_off(before);
    gate.open();
    stopping
        .await
        .expect("the StopPodSandbox task")
        .expect("StopPodSandbox");
    assert!(
        veths.is_empty(),
        "the pod's veth outlived CNI's DEL: {veths:?}"
    );
    let inspect = format!("/containers/{id}/json");
    assert!(
        !asked.iter().any(|s| s.method == "GET" && s.path == inspect),
        "StopPodSandbox asked Docker for the sandbox: {asked:?}"
    );
    remove_pod(&mut rt, &id).await;
}

/// Each plugin is asked its versions once per node and build, not on every RunPodSandbox
/// (a plugin process each): the answers are kept in the front's root for every shim.
#[tokio::test]
async fn plugins_are_asked_their_versions_once_for_every_pod_of_the_node() {
    let net = CniNet::new();
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let cache = dockpod_proto::layout::cni_versions_dir(&front.root_dir());
    let entries =
        || -> std::collections::BTreeMap<String, (std::time::SystemTime, serde_json::Value)> {
            dockpod_tests::list_dir(&cache)
                .into_iter()
                .map(|name| {
                    let path = cache.join(&name);
                    let written = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .expect("mtime");
                    let entry = serde_json::from_slice(&std::fs::read(&path).expect("entry"))
                        .expect("JSON");
                    (name, (written, entry))
                })
                .collect()
        };
    let first = run_pod(
        &mut rt,
        &pod_config(&dockpod_tests::unique("cni-ver"), logs.path()),
    )
    .await;
    let after_first = entries();
    let plugins: Vec<&str> = after_first
        .values()
        .filter_map(|(_, e)| e["binary"].as_str()?.rsplit('/').next())
        .collect();
    for plugin in ["loopback", "bridge", "firewall", "portmap"] {
        assert!(
            plugins.contains(&plugin),
            "no versions kept for {plugin}: {plugins:?}"
        );
    }
    for (_, entry) in after_first.values() {
        let supported = entry["supported"].as_array().expect("supported");
        assert!(
            supported.iter().any(|v| v == "1.0.0"),
            "the plugin's own answer is kept: {entry}"
        );
    }
    let second = run_pod(
        &mut rt,
        &pod_config(&dockpod_tests::unique("cni-ver"), logs.path()),
    )
    .await;
    assert_eq!(
        entries(),
        after_first,
        "the second pod's shim asked the plugins again"
    );
    remove_pod(&mut rt, &first).await;
    remove_pod(&mut rt, &second).await;
}

#[tokio::test]
async fn thirty_pods_created_and_removed_leave_no_address_or_veth() {
    let net = CniNet::new();
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let runs = (0..30).map(|i| {
        let mut rt = rt.clone();
        let pod = pod_config(&format!("cni-many{i}"), logs.path());
        async move { run_pod(&mut rt, &pod).await }
    });
    let ids = futures_util::future::join_all(runs).await;
    let mut ips = net.allocated();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 30, "{ips:?}");
    assert_eq!(net.veths().len(), 30);
    let removes = ids.iter().map(|id| {
        let mut rt = rt.clone();
        async move { remove_pod(&mut rt, id).await }
    });
    futures_util::future::join_all(removes).await;
    assert!(
        net.allocated().is_empty(),
        "addresses left: {:?}",
        net.allocated()
    );
    assert!(net.veths().is_empty(), "veths left: {:?}", net.veths());
    assert!(net.cached().is_empty(), "cache left: {:?}", net.cached());
}

#[tokio::test]
async fn a_failing_plugin_surfaces_its_error_and_setup_is_undone() {
    // A plugin at the end of the chain refuses ADD with a CNI error, after bridge and
    // host-local did their part.
    let net = CniNet::with_chain_end(vec![serde_json::json!({"type": "refuse"})]);
    let plugin = net.plugin_dir().join("refuse");
    std::fs::write(
        &plugin,
        "#!/bin/sh\ncase \"$CNI_COMMAND\" in\n\
         VERSION) echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}' ;;\n\
         ADD) echo '{\"cniVersion\":\"1.0.0\",\"code\":101,\"msg\":\"refused by the test\",\"details\":\"on purpose\"}'; exit 1 ;;\n\
         esac\n",
    )
    .expect("write plugin");
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&plugin).expect("stat").permissions(),
        0o755,
    );
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("cni-refused", logs.path())),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("the chain fails");
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(
        err.message().contains("refused by the test: on purpose"),
        "{err:?}"
    );
    assert!(
        net.allocated().is_empty(),
        "address left: {:?}",
        net.allocated()
    );
    assert!(net.veths().is_empty(), "veth left: {:?}", net.veths());
    assert!(net.cached().is_empty(), "cache left: {:?}", net.cached());
    let left = net.iptables_rules();
    assert!(left.is_empty(), "iptables rules left: {left:?}");
    assert!(instance_containers(&front.instance_id()).await.is_empty());
    front.wait_shims_retired().await;
}

/// Lets a test plugin's ADD finish when dropped, so no plugin outlives a failed test.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
    }
}

#[tokio::test]
async fn a_shim_killed_inside_cni_add_leaves_no_address_and_the_retry_succeeds() {
    // A plugin at the end of the chain that, while `hold` exists, says it has entered ADD and
    // waits for `release`; then it passes the chain's result on, as a chained plugin does.
    let net = CniNet::with_chain_end(vec![serde_json::json!({"type": "hang"})]);
    let dir = net.plugin_dir();
    let plugin = dir.join("hang");
    std::fs::write(
        &plugin,
        format!(
            r#"#!/usr/bin/python3
import json, os, sys, time
conf = json.load(sys.stdin)
command = os.environ["CNI_COMMAND"]
if command == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}}))
elif command == "ADD":
    if os.path.exists("{dir}/hold"):
        with open("{dir}/entered.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("{dir}/entered.tmp", "{dir}/entered")
        while not os.path.exists("{dir}/release"):
            time.sleep(0.05)
    print(json.dumps(conf["prevResult"]))
"#,
            dir = dir.display()
        ),
    )
    .expect("write plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(dir.join("hold"), b"").expect("hold");
    let _release = Release(dir.join("release"));
    let front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let config = pod_config("cni-cut", logs.path());
    let call = tokio::spawn({
        let (mut rt, config) = (rt.clone(), config.clone());
        async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        }
    });
    wait_until("the shim inside CNI ADD", SECS, || {
        let entered = dir.join("entered");
        async move { entered.exists().then_some(()) }
    })
    .await;
    assert_eq!(
        net.allocated().len(),
        1,
        "host-local gave the pod its address"
    );
    let shims = front.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    // The plugin dies with the shim: left running, it would finish its ADD after the clean-up
    // DEL (it waits for `release`, which only the test's end creates).
    let plugin_pid: u32 = std::fs::read_to_string(dir.join("entered"))
        .expect("the plugin's PID")
        .trim()
        .parse()
        .expect("a PID");
    wait_until("the plugin to die with its shim", SECS, || async move {
        (!dockpod_proto::procfs::alive(plugin_pid)).then_some(())
    })
    .await;
    std::fs::remove_file(dir.join("hold")).expect("no more holding");
    let cut = call.await.expect("join");
    assert!(cut.is_err(), "the cut call answered {cut:?}");
    // The front gave up on the pod: what the dead shim left is deleted, the address too.
    assert!(
        net.allocated().is_empty(),
        "address left: {:?}",
        net.allocated()
    );
    assert!(instance_containers(&front.instance_id()).await.is_empty());
    wait_until("the veth of the abandoned sandbox to go", SECS, || async {
        net.veths().is_empty().then_some(())
    })
    .await;
    // The firewall plugin's rules name the pod's address; its DEL found them.
    let left = net.iptables_rules();
    assert!(left.is_empty(), "iptables rules left: {left:?}");

    // The kubelet's retry of the same RunPodSandbox.
    let mut rt = rt.clone();
    let id = run_pod(&mut rt, &config).await;
    let ips = pod_ip(&pod_status(&mut rt, &id).await);
    assert_eq!(net.allocated(), ips);
    remove_pod(&mut rt, &id).await;
    assert!(net.allocated().is_empty());
    front.wait_shims_retired().await;
}

#[tokio::test]
async fn without_cni_pods_use_dockers_bridge_and_publish_host_ports() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut pod = pod_config("bridge-hostport", logs.path());
    // Docker binds the host port itself: a port another process took since it was found free
    // fails the sandbox, and another port is tried.
    let mut attempts = 0;
    let (id, host_port) = loop {
        attempts += 1;
        let host_port = free_port();
        pod.port_mappings = vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 8080,
            host_port: i32::from(host_port),
            host_ip: "127.0.0.1".into(),
        }];
        match rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            })
            .await
        {
            Ok(r) => break (r.into_inner().pod_sandbox_id, host_port),
            Err(e) if attempts < 5 && e.message().contains("already") => continue,
            Err(e) => panic!("RunPodSandbox: {e:?}"),
        }
    };
    let ips = pod_ip(&pod_status(&mut rt, &id).await);
    assert_eq!(ips.len(), 1, "{ips:?}");
    run_container(&mut rt, &id, &pod, http_server(8080, "through-docker")).await;
    let addr = format!("127.0.0.1:{host_port}");
    let reply = wait_until("the published port to answer", SECS, || {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || http_get(&addr))
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert!(reply.contains("through-docker"), "{reply}");
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn a_dual_stack_pod_reports_ipv4_first_and_keeps_both_across_restarts() {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        eprintln!("SKIPPED dual-stack check: this host's kernel has IPv6 disabled");
        return;
    }
    let net = CniNet::dual_stack();
    let mut front = start_front(&net).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("dual-stack", logs.path());
    let id = run_pod(&mut rt.clone(), &pod).await;
    let ips = pod_ip(&pod_status(&mut rt.clone(), &id).await);
    assert_eq!(ips.len(), 2, "{ips:?}");
    // The kubelet takes the first address as the pod's primary: IPv4, as CNI's own order and
    // every dual-stack runtime give it.
    assert!(net.contains(&ips[0]), "{ips:?} in {}", net.subnet);
    assert!(net.contains6(&ips[1]), "{ips:?} in {:?}", net.subnet6);
    assert_eq!(net.allocated().len(), 2, "{:?}", net.allocated());

    // A shim that died and came back answers from the pod's state, not from a new attachment.
    let old = shim_pid(&mut rt.clone(), &id).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    wait_new_shim(&rt, &id, old, SECS).await;
    assert_eq!(pod_ip(&pod_status(&mut rt.clone(), &id).await), ips);

    front.kill().await;
    front.restart().await;
    let mut rt = front.runtime();
    assert_eq!(pod_ip(&pod_status(&mut rt, &id).await), ips);
    assert_eq!(net.allocated().len(), 2, "{:?}", net.allocated());
    remove_pod(&mut rt, &id).await;
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
}
