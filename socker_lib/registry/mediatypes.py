"""Media types of manifests, configs and layers (OCI image-spec and Docker schema2)."""

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

#: layer media type → compression ("gzip", "zstd" or "none")
LAYER_COMPRESSION = {
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_GZIP: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_ND: "none",
    OCI_ND_GZIP: "gzip",
    OCI_ND_ZSTD: "zstd",
}
FOREIGN = {DOCKER_FOREIGN_GZIP, OCI_ND, OCI_ND_GZIP, OCI_ND_ZSTD}
