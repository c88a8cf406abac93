import sandboxlib as sb


def check_echo():
    r = sb.run(["sh", "-c", "echo hi; id -u"])
    assert r.exit_code == 0, r
    return r.stdout


def test_echo(runner):
    assert runner(check_echo) == b"hi\n0\n"


def test_single(single_id_runner):
    assert single_id_runner(check_echo) == b"hi\n0\n"
