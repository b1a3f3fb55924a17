//! Unit tests of `cgroups`.

use super::parse;

#[test]
fn kubernetes_paths_name_pod_and_container() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{id}.scope"
    );
    let w = parse(&systemd);
    assert_eq!(w.pod_uid.as_deref(), Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"));
    assert_eq!(w.container_id.as_deref(), Some(id));
    let cgroupfs = format!("/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{id}");
    let w = parse(&cgroupfs);
    assert_eq!(w.pod_uid.as_deref(), Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"));
    assert_eq!(w.container_id.as_deref(), Some(id));
    let docker = parse(&format!("/system.slice/docker-{id}.scope"));
    assert_eq!(docker.container_id.as_deref(), Some(id));
    assert_eq!(docker.pod_uid, None);
    let plain = parse("/user.slice/user-0.slice/session-1.scope");
    assert_eq!((plain.container_id, plain.pod_uid), (None, None));
}
