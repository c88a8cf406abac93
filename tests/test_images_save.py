"""store.save: archives the real skopeo reads back (docker-archive: and
oci-archive:), and that load() reads into another store (root and rootless)."""

from __future__ import annotations

import json
import os
import subprocess

from sandboxlib.images import ImageStore

from .imagekit import busybox_layers, layer_tar


def check_save_and_reload(path, busybox_rootfs, out_dir):
    store = ImageStore(os.path.join(path, "a"))
    import gzip
    import io

    from sandboxlib.images import newimage

    from .imagekit import add_image

    layers = busybox_layers(busybox_rootfs)
    with store.writing():  # one gzip layer, two plain ones
        first = store.blobs.put_stream(io.BytesIO(gzip.compress(layers[0])))
        stored = [first + ("application/vnd.oci.image.layer.v1.tar+gzip",)] + [
            newimage.add_plain_layer(store, io.BytesIO(data)) + ("application/vnd.oci.image.layer.v1.tar",)
            for data in layers[1:]
        ]
        import hashlib

        diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
        manifest = newimage.write_manifest(store, newimage.new_config(diff_ids, {"Cmd": ["sh"]}), stored)
        image = store.add(manifest, ("app:1",))
    add_image(store, [layer_tar({"x": b"x"})], ["other:2"])
    archive = os.path.join(out_dir, "saved.tar")
    store.save(["app:1", "other:2"], archive)
    store.save("app:1", os.path.join(out_dir, "one.tar"))
    again = ImageStore(os.path.join(path, "b"))
    loaded = again.load(archive)
    return image.id, [(i.id, i.references) for i in loaded], [layer.diff_id for layer in loaded[0].layers] == diff_ids


def test_save_is_read_by_skopeo_and_by_load(runner, store_dir, busybox_root, shared_dir):
    out_dir = shared_dir / f"save-{runner.mode}"
    out_dir.mkdir(mode=0o777)
    os.chmod(out_dir, 0o777)
    image_id, loaded, same_layers = runner(check_save_and_reload, store_dir, busybox_root, str(out_dir))
    assert loaded[0] == (image_id, ("app:1",)) and loaded[1][1] == ("other:2",) and same_layers
    for source in (
        f"docker-archive:{out_dir}/one.tar",
        f"docker-archive:{out_dir}/saved.tar:app:1",
        f"oci-archive:{out_dir}/saved.tar:app:1",
        f"oci-archive:{out_dir}/one.tar",
    ):
        dest = out_dir / source.split(":")[0]
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "-q", source, f"dir:{dest}"], check=True, capture_output=True
        )
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["config"]["digest"] == image_id, source
        assert len(manifest["layers"]) == 3, source
    subprocess.run(["rm", "-rf", str(out_dir)], check=True)
