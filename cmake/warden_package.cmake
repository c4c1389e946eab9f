# `cpack -G DEB` (make package): three Debian packages.
# - warden: wardend, wardenctl, the units, the configs and the cluster scripts; its postinst
#   enables warden.socket.
# - python3-warden: the Python client, for Debian's python3.
# - libwarden-dev: the C++ SDK (libwarden.a, headers, CMake package, pkg-config file).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME warden)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "warden developers <warden@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Node-local supervisor that cleans up after ML training jobs however they end")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL daemon python dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_DAEMON_PACKAGE_NAME warden)
set(CPACK_DEBIAN_DAEMON_PACKAGE_SECTION admin)
# Runtime libraries, found from the binaries' links.
set(CPACK_DEBIAN_DAEMON_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_DAEMON_PACKAGE_DEPENDS "systemd")
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
    ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)

set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-warden)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
set(CPACK_DEBIAN_PYTHON_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3 (>= 3.9)")
set(CPACK_COMPONENT_PYTHON_DESCRIPTION
    "Python client for wardend, with PyTorch DataLoader and Lightning helpers")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libwarden-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "C++ client library for wardend: libwarden.a, headers, CMake package and pkg-config file")
include(CPack)
