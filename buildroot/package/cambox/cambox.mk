################################################################################
#
# cambox
#
################################################################################

# Built from the cambox tree this external tree sits in. A "local" site would skip the
# cargo vendoring step (and with it the offline, --locked build), so scripts/build-image
# packs the tree with `git archive` into CAMBOX_TARBALL_DIR and the package downloads
# that tarball by the "file" method; the cargo post-process then vendors every crate.
# scripts/build-image sets both from the tree (git describe, and where it packed it).
CAMBOX_VERSION = $(or $(CAMBOX_SOURCE_VERSION),dev)
CAMBOX_SITE = file://$(or $(CAMBOX_TARBALL_DIR),$(BR2_EXTERNAL_CAMBOX_PATH)/../target/image-src)
CAMBOX_SITE_METHOD = file
CAMBOX_SUBDIR = firmware/cambox
CAMBOX_LICENSE = MIT or Apache-2.0
CAMBOX_DEPENDENCIES = host-cmake host-pkgconf

CAMBOX_FEATURES = v4l2
ifeq ($(BR2_PACKAGE_ALSA_LIB),y)
CAMBOX_DEPENDENCIES += alsa-lib
CAMBOX_FEATURES += alsa
endif
ifeq ($(BR2_PACKAGE_LIBCAMERA)$(BR2_PACKAGE_LIBCAMERA_RPI),y)
CAMBOX_DEPENDENCIES += $(if $(BR2_PACKAGE_LIBCAMERA_RPI),libcamera-rpi,libcamera)
CAMBOX_FEATURES += libcamera
endif
ifeq ($(BR2_PACKAGE_CAMBOX_RPI),y)
CAMBOX_FEATURES += rpi
endif

CAMBOX_CARGO_BUILD_OPTS = --features "$(CAMBOX_FEATURES)"
CAMBOX_CARGO_INSTALL_OPTS = --features "$(CAMBOX_FEATURES)"

# The board's defaults for run-box (a cambox.toml "board" key wins over them).
define CAMBOX_INSTALL_BOARD_ENV
	mkdir -p $(TARGET_DIR)/etc/cambox
	printf 'CAMBOX_BOARD=%s\n' $(if $(BR2_PACKAGE_CAMBOX_RPI),gpio,simulated) \
		> $(TARGET_DIR)/etc/cambox/board.env
endef
CAMBOX_POST_INSTALL_TARGET_HOOKS += CAMBOX_INSTALL_BOARD_ENV

$(eval $(cargo-package))
