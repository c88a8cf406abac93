"""A tour of sandboxlib: what `make demo` runs."""

import os
import shutil
import subprocess
import tempfile

import sandboxlib as sb

print("== one-shot run on the default host view ==")
r = sb.run(["sh", "-c", "echo hi from $(hostname); id; ls /; ps -e"], hostname="demo")
print(r.stdout.decode(), f"exit_code={r.exit_code} duration={r.duration * 1000:.1f} ms")

print("== a long-lived container ==")
with sb.Container(hostname="box", env={"GREETING": "hello"}) as c:
    print(c.run(["sh", "-c", "echo $GREETING from $(hostname)"]).stdout.decode(), end="")
    p = c.spawn(["cat"], stdin=sb.PIPE, stdout=sb.PIPE)
    out, _ = p.communicate(b"data through a pipe\n")
    print(out.decode(), end="")
    r = c.run(["sleep", "10"], timeout=0.2)
    print(f"sleep 10 with timeout=0.2: timed_out={r.timed_out} signal={r.signal!r}")

print("== isolation ==")
r = sb.run(["sh", "-c", "cat /etc/shadow | wc -c; ls /root /home 2>&1; ip -o link 2>/dev/null | cut -d: -f2"])
print(r.stdout.decode(), r.stderr.decode())

print("== limits, seccomp and verdicts ==")
r = sb.run(["python3", "-c", "x = bytearray(10**9)"], limits=sb.Limits(memory="64M", pids=32))
print(f"a 1 GB allocation under memory=64M: verdict={r.verdict.name} oom_killed={r.oom_killed}")
r = sb.run(["sh", "-c", "unshare -U true"])
print("unshare under the default seccomp policy:", r.stderr.decode().strip())

print("== a Python function in the sandbox ==")
with sb.Container() as c:
    print("c.call(pow, 2, 10) ->", c.call(pow, 2, 10), "| hostname inside:", c.call(__import__("socket").gethostname))

print("== an image (made here from Debian's busybox-static, in a throwaway store) ==")

with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "rootfs")
    for d in ("bin", "etc", "tmp", "proc", "dev", "sys", "run"):
        os.makedirs(os.path.join(root, d))
    shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    store = sb.ImageStore(os.path.join(tmp, "store"))
    image = store.from_directory(root, "demo:1", config={"Cmd": ["sh", "-c", "echo hi from an image; uname -a"]})
    r = sb.run(None, image="demo:1", image_store=store.path)  # the image's Cmd, as docker run does
    print(r.stdout.decode(), end="")
    with sb.Container(image="demo:1", image_store=store.path) as c:
        c.write_file("/tmp/note.txt", b"written from the host\n")
        print(c.run(["cat", "/tmp/note.txt"]).stdout.decode(), end="")
    print("images in the store:", [str(i) for i in store.list()])
