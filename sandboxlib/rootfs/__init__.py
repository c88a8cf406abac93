"""A container's file system: the mount layout, id maps, users, image roots, writable layers,
copying files in and out."""
