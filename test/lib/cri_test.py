"""make test-cri: Kubernetes' CRI against runq, driven as a kubelet drives it.

A private containerd (Debian's, with its CRI plugin) runs in a network
namespace of this test's own, so the CNI bridge, the pod addresses and the
pods' traffic never touch the host's network. Its config carries the `runq`
runtime handler written by `make install-containerd` and the default
`runc` one, to compare with. Each test is a function named test_cri_*; it
raises Fail (or any error) to fail. Ends with "N passed, M failed, K skipped".
Run by test/cri, which provides the venv with the CRI client.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as rpc

RUNQ = "/var/lib/runq/runq"
GUEST_KERNEL = open("/var/lib/runq/qemu/kernels/default/version").read().strip()
NETNS = f"runqcri{os.getpid()}"
NETNS_PATH = f"/run/netns/{NETNS}"
ROOT = "/var/lib/runq-cri-test"
STATE = "/run/runq-cri-test"
SOCK = f"{STATE}/containerd.sock"
LOGS = f"{ROOT}/pods"
SUBNET = "10.251.0"  # the test's own bridge, inside NETNS only
IMAGE = "docker.io/runq-test/busybox:latest"
PAUSE = "docker.io/runq-test/pause:latest"
RUNC_STATE = "/run/containerd/runc/k8s.io"
CGROUPS = "/sys/fs/cgroup"
TASKS = f"{STATE}/io.containerd.runtime.v2.task/k8s.io"


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def expect_eq(what, want, got):
    if want != got:
        raise Fail(f"{what}: expected [{want}], got [{got}]")


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def wait_for(what, secs, probe, every=0.2):
    """Poll probe() until it returns a true value; fail naming `what`."""
    end = time.monotonic() + secs
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > end:
            raise Fail(f"{what}: not within {secs} s")
        time.sleep(every)


# --- the private containerd -------------------------------------------------

CONFIG = f"""version = 2
root = "{ROOT}/containerd"
state = "{STATE}"
[grpc]
  address = "{SOCK}"
[ttrpc]
  address = "{SOCK}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = {{restrict_oom}}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{ROOT}/cni"
"""

CNI = {
    "cniVersion": "1.0.0",
    "name": "runq-cri-test",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "rqcri0",
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "dataDir": f"{ROOT}/ipam",
                "ranges": [[{"subnet": f"{SUBNET}.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }
    ],
}


class Containerd:
    def __init__(self):
        for d in (ROOT, STATE):
            if os.path.exists(d):
                raise SystemExit(f"cri: {d} exists (an earlier run left it?): remove it first")
        os.makedirs(f"{ROOT}/cni")
        os.makedirs(STATE)
        os.makedirs(LOGS)
        config = f"{ROOT}/config.toml"
        # The kubelet gives the sandbox oom_score_adj -998, which needs
        # CAP_SYS_RESOURCE; a host that withholds it (this one's root has
        # none) runs containerd as its docs say for such hosts.
        restrict = not has_cap(CAP_SYS_RESOURCE)
        if restrict:
            print("cri: no CAP_SYS_RESOURCE here: restrict_oom_score_adj = true")
        with open(config, "w") as f:
            f.write(CONFIG.replace("{restrict_oom}", str(restrict).lower()))
        with open(f"{ROOT}/cni/10-runq-cri-test.conflist", "w") as f:
            json.dump(CNI, f)
        # The handler as users get it: `make install-containerd`, pointed
        # at this config (its install prerequisite has run already).
        run("make", "-s", "-o", "install", "install-containerd", f"CONTAINERD_CONFIG={config}")
        run("ip", "netns", "add", NETNS)
        run("ip", "-n", NETNS, "link", "set", "lo", "up")
        self.log_path = f"{ROOT}/containerd.log"
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={NETNS_PATH}", "containerd", "--config", config],
            stdout=open(self.log_path, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.channel = grpc.insecure_channel(f"unix://{SOCK}")
        self.rt = rpc.RuntimeServiceStub(self.channel)
        self.im = rpc.ImageServiceStub(self.channel)

        def ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"cri: containerd exited: {self.log_tail()}")
            try:
                st = self.rt.Status(pb.StatusRequest(), timeout=2).status
            except grpc.RpcError:
                return False
            return all(c.status for c in st.conditions)

        wait_for("containerd's CRI reporting RuntimeReady and NetworkReady", 60, ready)
        # No registry is reachable: the images come from dockerd's store.
        save = subprocess.Popen(
            ["docker", "save", "runq-test/busybox:latest", "runq-test/pause:latest"],
            stdout=subprocess.PIPE,
        )
        run("ctr", "-a", SOCK, "-n", "k8s.io", "images", "import", "-", stdin=save.stdout)
        save.wait()
        for ref in (IMAGE, PAUSE):
            wait_for(
                f"CRI seeing image {ref}",
                30,
                lambda ref=ref: self.im.ImageStatus(
                    pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)), timeout=5
                ).image.id,
            )

    def log_tail(self, n=5):
        try:
            return " | ".join(open(self.log_path).read().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def remove_all_pods(self):
        for p in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
            self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id), timeout=120)
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=120)

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Shims of this containerd outlive it by design; none should be left.
        left = shims()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        for line in reversed(open("/proc/self/mounts").read().splitlines()):
            mnt = line.split()[1]
            if mnt.startswith((ROOT, STATE)):
                subprocess.run(["umount", "-l", mnt], check=False)
        shutil.rmtree(ROOT, ignore_errors=True)
        shutil.rmtree(STATE, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        # runc's state and cgroup parents made for this namespace, kept if
        # anything is left in them.
        for d in [RUNC_STATE, f"{CGROUPS}/k8s.io"] + [f"{CGROUPS}/{c}/k8s.io" for c in os.listdir(CGROUPS)]:
            try:
                os.rmdir(d)
            except OSError:
                pass
        return left


CAP_SYS_RESOURCE = 24


def has_cap(bit):
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def shims():
    """Shim processes serving this test's containerd."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and SOCK.encode() in cmd:
            out.append(int(pid))
    return out


def vm_processes():
    """Host-side processes of runq VMs, anywhere on the host."""
    out = subprocess.run(
        ["pgrep", "-f", "^(qemu-system|virtiofsd|vhost-device-vsock|/usr/bin/runq-proxy)"],
        capture_output=True,
        text=True,
    ).stdout
    return sorted(out.split())


# --- pods and containers ----------------------------------------------------


class Pod:
    def __init__(self, cd, handler, name):
        self.cd, self.handler = cd, handler
        uid = uuid.uuid4().hex
        self.logdir = f"{LOGS}/{uid}"
        os.makedirs(self.logdir)
        self.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="runq-cri-test"),
            hostname=name,
            log_directory=self.logdir,
            linux=pb.LinuxPodSandboxConfig(),
        )
        self.id = cd.rt.RunPodSandbox(
            pb.RunPodSandboxRequest(config=self.config, runtime_handler=handler), timeout=120
        ).pod_sandbox_id

    def status(self):
        return self.cd.rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=self.id), timeout=30
        ).status

    def ip(self):
        return self.status().network.ip

    def container(self, name, cmd, resources=None, start=True):
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=IMAGE),
            command=cmd,
            log_path=f"{name}.log",
            linux=pb.LinuxContainerConfig(resources=resources),
        )
        cid = self.cd.rt.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=self.id, config=config, sandbox_config=self.config),
            timeout=60,
        ).container_id
        c = Container(self, cid, name)
        if start:
            c.start()
        return c

    def remove(self):
        self.cd.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self.id), timeout=120)
        self.cd.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self.id), timeout=120)


class Container:
    def __init__(self, pod, cid, name):
        self.pod, self.id, self.name = pod, cid, name
        self.rt = pod.cd.rt

    def start(self):
        self.rt.StartContainer(pb.StartContainerRequest(container_id=self.id), timeout=180)

    def status(self):
        return self.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=self.id), timeout=30).status

    def wait_exit(self, secs=180):
        st = wait_for(
            f"container {self.name} ({self.pod.handler}) exiting",
            secs,
            lambda: (s := self.status()).state == pb.CONTAINER_EXITED and s,
        )
        return st.exit_code

    def log(self):
        """The CRI log file as (stream, text) pairs, partial lines joined."""
        path = self.status().log_path
        lines, part = [], ""
        for raw in open(path).read().splitlines():
            _, stream, tag, text = (raw.split(" ", 3) + [""])[:4]
            part += text
            if tag == "F":
                lines.append((stream, part))
                part = ""
        return lines

    def wait_log(self, text, secs=180):
        def seen():
            if any(t == text for _, t in self.log()):
                return True
            st = self.status()
            if st.state == pb.CONTAINER_EXITED and not any(t == text for _, t in self.log()):
                raise Fail(f"{self.name} ({self.pod.handler}) exited {st.exit_code} before printing {text!r}: {self.log()[-3:]}")
            return False

        return wait_for(f"{text!r} in the CRI log of {self.name} ({self.pod.handler})", secs, seen)

    def exec_sync(self, cmd, timeout=60):
        r = self.rt.ExecSync(
            pb.ExecSyncRequest(container_id=self.id, cmd=cmd, timeout=timeout), timeout=timeout + 30
        )
        return r.stdout.decode(), r.stderr.decode(), r.exit_code

    def stop(self, timeout):
        self.rt.StopContainer(pb.StopContainerRequest(container_id=self.id, timeout=timeout), timeout=timeout + 60)


def without_runq_notes(log):
    """runq's one documented extra line: the TCG fallback warning."""
    return [(s, t) for s, t in log if not (s == "stderr" and t.startswith("runq: ") and "TCG" in t)]


def fetch_in_netns(url, secs):
    """HTTP GET from the test's network namespace (the pods' host side)."""
    code = "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())"

    def get():
        r = subprocess.run(
            ["nsenter", f"--net={NETNS_PATH}", "/usr/bin/python3", "-c", code, url],
            capture_output=True,
            text=True,
        )
        return r.returncode == 0 and r.stdout.strip()

    return wait_for(f"an answer from {url}", secs, get, every=0.5)


SERVER = [
    "sh",
    "-c",
    "mkdir -p /tmp/www && echo vm-says-hi > /tmp/www/index.html && uname -r > /tmp/www/kernel"
    " && echo serving && exec httpd -f -p 8080 -h /tmp/www",
]
SLEEPER = ["sh", "-c", "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 1; done"]


# --- tests ------------------------------------------------------------------


def test_cri_app_container_runs_in_a_vm_with_runcs_exit_code_and_log(cd):
    seen = {}
    for handler in ("runc", "runq"):
        pod = Pod(cd, handler, f"exit-{handler}")
        c = pod.container("app", ["sh", "-c", "uname -r; echo to-stderr >&2; echo partial-no-newline | tr -d '\\n'; exit 7"])
        seen[handler] = (c.wait_exit(), without_runq_notes(c.log()), c.status().reason)
        pod.remove()
    (rc_runc, log_runc, why_runc), (rc_runq, log_runq, why_runq) = seen["runc"], seen["runq"]
    expect_eq("exit code (runc says 7)", rc_runc, rc_runq)
    expect_eq("ContainerStatus reason", why_runc, why_runq)
    # Each stream keeps its order; between the two, the CRI log has the
    # order of arrival (under runc as under runq): compared per stream.
    def stream(log, name):
        return [t for s, t in log if s == name]

    out_runc, out_runq = stream(log_runc, "stdout"), stream(log_runq, "stdout")
    expect_eq("the guest kernel first on stdout", GUEST_KERNEL, out_runq[0] if out_runq else None)
    if out_runq[0] == os.uname().release:
        raise Fail("uname -r is the host's: not in a VM")
    expect_eq("stdout after uname -r, as under runc", out_runc[1:], out_runq[1:])
    expect_eq("stderr, as under runc", stream(log_runc, "stderr"), stream(log_runq, "stderr"))


def test_cri_exec_sync_and_stop_as_under_runc(cd):
    seen = {}
    for handler in ("runc", "runq"):
        pod = Pod(cd, handler, f"exec-{handler}")
        c = pod.container("app", SLEEPER)
        c.wait_log("ready")
        got = [
            c.exec_sync(["sh", "-c", "echo out; echo err >&2; exit 3"]),
            c.exec_sync(["cat", "/etc/hostname"]),
            c.exec_sync(["sh", "-c", "read -t 1 x; echo no-stdin:$?"]),
        ]
        try:
            got.append(c.exec_sync(["/no/such/program"]))
        except grpc.RpcError as e:
            got.append(("rpc error", e.code().name))
        c.stop(timeout=30)
        got.append(c.wait_exit(60))
        got.append([t for _, t in without_runq_notes(c.log())])
        seen[handler] = got
        pod.remove()
    runc, runq = seen["runc"], seen["runq"]
    # The one documented difference: runc fails the exec call itself
    # (an RPC error here; exit 126 under Docker), runq's exec reaches the
    # guest first, which answers exit 126 with the reason on stderr (the
    # code Docker shows for both).
    expect_eq("exec of a missing program under runc", ("rpc error", "UNKNOWN"), runc[3])
    out, err, rc = runq[3]
    if (out, rc) != ("", 126) or "/no/such/program" not in err:
        raise Fail(f"exec of a missing program under runq: expected exit 126 naming it on stderr, got {runq[3]}")
    expect_eq("exec cat /etc/hostname under runc", ("exec-runc\n", "", 0), runc[1])
    runc[1] = ("exec-runq\n", "", 0)
    for i, what in enumerate(
        ["exec of a failing shell", "exec cat /etc/hostname", "exec without stdin", None,
         "exit code after StopContainer (the TERM trap exits 42)", "the CRI log"]
    ):
        if what:
            expect_eq(f"{what} (runc: {runc[i]})", runc[i], runq[i])


def test_cri_pod_ip_reaches_a_server_in_the_vm(cd):
    pod = Pod(cd, "runq", "server")
    c = pod.container("web", SERVER)
    c.wait_log("serving")
    ip = pod.ip()
    if not ip.startswith(f"{SUBNET}."):
        raise Fail(f"pod IP {ip!r} is not on the test's CNI subnet {SUBNET}.0/24")
    expect_eq("GET / from the host side", "vm-says-hi", fetch_in_netns(f"http://{ip}:8080/", 90))
    expect_eq("the server's kernel", GUEST_KERNEL, fetch_in_netns(f"http://{ip}:8080/kernel", 30))
    pod.remove()


def test_cri_resource_limits_size_the_vm(cd):
    pod = Pod(cd, "runq", "sized")
    res = pb.LinuxContainerResources(cpu_period=100000, cpu_quota=200000, memory_limit_in_bytes=400 << 20)
    cmd = ["sh", "-c", "uname -r; nproc; awk '/MemTotal/ {print $2}' /proc/meminfo"]
    c = pod.container("app", cmd, resources=res)
    expect_eq("exit code", 0, c.wait_exit())
    out = [t for s, t in without_runq_notes(c.log()) if s == "stdout"]
    expect_eq("the guest kernel", GUEST_KERNEL, out[0])
    expect_eq("nproc with cpu_quota 2 x cpu_period", "2", out[1])
    mem = int(out[2])
    if not 300000 <= mem <= 400 * 1024:
        raise Fail(f"MemTotal {mem} kB with a 400 MiB memory limit: not in [300000, 409600]")
    pod.remove()


def test_cri_init_container_then_app_container_in_one_pod(cd):
    pod = Pod(cd, "runq", "init-then-app")
    init = pod.container("init", ["sh", "-c", "uname -r; ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*'"])
    expect_eq("init container exit code", 0, init.wait_exit())
    out = [t for s, t in without_runq_notes(init.log()) if s == "stdout"]
    expect_eq("init container: kernel, pod address", [GUEST_KERNEL, f"inet {pod.ip()}"], out)
    # The app container finds the pod's network as the init container left it.
    app = pod.container("web", SERVER)
    app.wait_log("serving")
    expect_eq("app container after init: GET /", "vm-says-hi", fetch_in_netns(f"http://{pod.ip()}:8080/", 90))
    pod.remove()


def test_cri_second_running_app_container_is_refused_with_one_line(cd):
    pod = Pod(cd, "runq", "two-apps")
    first = pod.container("web", SERVER)
    first.wait_log("serving")
    second = pod.container("second", SLEEPER, start=False)
    try:
        second.start()
        raise Fail("a second running container in a runq pod was started")
    except grpc.RpcError as e:
        msg = e.details()
    if "another of its containers is running" not in msg:
        raise Fail(f"StartContainer's error does not say why: {msg}")
    if first.status().state != pb.CONTAINER_RUNNING:
        raise Fail("the first container stopped when the second was refused")
    expect_eq("the first still serves", "vm-says-hi", fetch_in_netns(f"http://{pod.ip()}:8080/", 30))
    pod.remove()


def host_state():
    """What a pod could leave behind, on the host and in the test's netns."""
    links = json.loads(run("ip", "-n", NETNS, "-j", "link", "show"))
    return {
        "vm processes": vm_processes(),
        "shims": sorted(shims()),
        "netns": sorted(n for n in os.listdir("/run/netns") if n != NETNS),
        "runc state": sorted(os.listdir(RUNC_STATE)) if os.path.isdir(RUNC_STATE) else [],
        "task bundles": sorted(os.listdir(TASKS)) if os.path.isdir(TASKS) else [],
        "cgroups": sorted(
            os.listdir(f"{CGROUPS}/memory/k8s.io") if os.path.isdir(f"{CGROUPS}/memory/k8s.io") else []
        ),
        "links": sorted(l["ifname"] for l in links if l["ifname"] != "rqcri0"),
        "pod addresses": sorted(
            f for f in os.listdir(f"{ROOT}/ipam/runq-cri-test") if f.startswith(SUBNET)
        ) if os.path.isdir(f"{ROOT}/ipam/runq-cri-test") else [],
    }


def test_cri_stop_and_remove_pod_leave_nothing_behind(cd):
    before = host_state()
    pod = Pod(cd, "runq", "leaves")
    c = pod.container("app", SLEEPER)
    c.wait_log("ready")
    during = host_state()
    if len(during["vm processes"]) <= len(before["vm processes"]):
        raise Fail("no VM process appeared for the running container")
    expect_eq("exec while running", ("hi\n", "", 0), c.exec_sync(["echo", "hi"]))
    pod.remove()
    # The shim exits after RemovePodSandbox answered: wait for that event.
    wait_for("the pod's processes ending", 60, lambda: host_state() == before)


TESTS = [f for n, f in sorted(globals().items()) if n.startswith("test_cri_")]


def main():
    only = os.environ.get("TESTS", "")
    cd = Containerd()
    passed = failed = skipped = 0
    try:
        for t in TESTS:
            if only and only not in t.__name__:
                continue
            start = time.monotonic()
            try:
                t(cd)
                passed += 1
                print(f"PASS {t.__name__} ({time.monotonic() - start:.0f}s)", flush=True)
            except Skip as e:
                skipped += 1
                print(f"SKIP {t.__name__}: {e}", flush=True)
            except Exception as e:  # a test's failure, whatever raised it
                failed += 1
                reason = str(e) if isinstance(e, Fail) else "".join(traceback.format_exception_only(e)).strip()
                print(f"FAIL {t.__name__} ({time.monotonic() - start:.0f}s): {reason}", flush=True)
                print(f"     containerd log: {cd.log_tail(3)}", flush=True)
            try:
                cd.remove_all_pods()
            except grpc.RpcError as e:
                failed += 1
                print(f"FAIL cleanup after {t.__name__}: {e.details()}", flush=True)
    finally:
        left = cd.stop()
    if left:
        failed += 1
        print(f"FAIL shims left after containerd stopped: {left}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
