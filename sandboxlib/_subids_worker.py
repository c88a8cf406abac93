"""The program ``sandboxlib.subids`` runs in a short sandbox whose user
namespace maps a rootless caller's subordinate ids (its source is passed
with ``-c``: standard library only, nothing of sandboxlib is imported).

It is the container's root there, with the capabilities to chown and
delete files of every mapped id, and works on the trees bound at
``/sbx/0``, ``/sbx/1``, ... (never on their top directories, which stay
the caller's and which the caller removes or renames itself):

    chown    stdin: JSON {inode: [uid, gid, mode]} (container ids); every
             entry below /sbx/0 with such an inode gets those owners (and,
             for a directory, its mode again: a setgid bit survives)
    empty    removes everything below each /sbx/N

Symlinks are never followed (``os.fwalk``, ``follow_symlinks=False``).
On failure it prints ``[errno, operation]`` as JSON and exits 1."""
import json
import os
import shutil
import stat
import sys

TOP = "/sbx"


def chown(owners: dict) -> None:
    top = os.path.join(TOP, "0")
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(top, follow_symlinks=False):
        for name in dirnames + filenames:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            want = owners.get(str(st.st_ino))
            if want is None:
                continue
            uid, gid, mode = want
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(name, mode, dir_fd=dir_fd)


def empty() -> None:
    for top in sorted(os.listdir(TOP)):
        fd = os.open(os.path.join(TOP, top), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for name in os.listdir(fd):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=fd)
                else:
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)


def main() -> int:
    try:
        if sys.argv[1] == "chown":
            chown(json.load(sys.stdin))
        elif sys.argv[1] == "empty":
            empty()
        else:
            raise OSError(22, f"unknown operation {sys.argv[1]!r}")
    except OSError as err:
        print(json.dumps([err.errno or 0, f"{sys.argv[1]}: {err}"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
