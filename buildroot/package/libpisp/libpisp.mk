################################################################################
#
# libpisp
#
################################################################################

LIBPISP_VERSION = 1.6.0
LIBPISP_SITE = $(call github,raspberrypi,libpisp,v$(LIBPISP_VERSION))
LIBPISP_LICENSE = BSD-2-Clause
LIBPISP_LICENSE_FILES = LICENSE
LIBPISP_INSTALL_STAGING = YES
LIBPISP_DEPENDENCIES = host-pkgconf json-for-modern-cpp
LIBPISP_CONF_OPTS = -Dlogging=disabled -Dexamples=false -Dgstreamer=disabled

$(eval $(meson-package))
