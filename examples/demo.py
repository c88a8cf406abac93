"""A tour of sandboxlib: what `make demo` runs."""
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
