################################################################################
#
# libcamera-rpi
#
################################################################################

LIBCAMERA_RPI_VERSION = v0.7.1+rpt20260429
LIBCAMERA_RPI_SITE = https://github.com/raspberrypi/libcamera.git
LIBCAMERA_RPI_SITE_METHOD = git
LIBCAMERA_RPI_LICENSE = LGPL-2.1+ (library), BSD-2-Clause (raspberrypi), GPL-2.0+ (utils)
LIBCAMERA_RPI_LICENSE_FILES = LICENSES/LGPL-2.1-or-later.txt LICENSES/BSD-2-Clause.txt \
	LICENSES/GPL-2.0-or-later.txt
LIBCAMERA_RPI_INSTALL_STAGING = YES
LIBCAMERA_RPI_DEPENDENCIES = host-openssl host-pkgconf host-python-jinja2 \
	host-python-ply host-python-pyyaml libyaml gnutls libpisp
LIBCAMERA_RPI_CONF_OPTS = \
	-Dauto_features=disabled \
	-Dpipelines=rpi/pisp,rpi/vc4 \
	-Dipas=rpi/pisp,rpi/vc4 \
	-Drpi-awb-nn=disabled \
	-Dv4l2=disabled \
	-Dcam=disabled \
	-Dqcam=disabled \
	-Dgstreamer=disabled \
	-Dpycamera=disabled \
	-Dlc-compliance=disabled \
	-Ddocumentation=disabled \
	-Dtest=false \
	-Dwerror=false

$(eval $(meson-package))
