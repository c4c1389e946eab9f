# `cpack -G DEB` (make package): three Debian packages, clean by lintian (test package_lintian).
# - warden: wardend, wardenctl, the units, the configs and the cluster scripts; its postinst
#   enables warden.socket.
# - python3-warden: the Python client, for Debian's python3.
# - libwarden-dev: the C++ SDK (libwarden.a, headers, CMake package, pkg-config file).
set(WARDEN_PACKAGE_MAINTAINER "warden maintainers <maintainers@users.noreply.r-seed-e9bc8e93.example>"
    CACHE STRING "The packages' Maintainer (a site that builds its own packages names itself)")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME warden)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${WARDEN_PACKAGE_MAINTAINER}")
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
set(CPACK_DEBIAN_DAEMON_PACKAGE_DEPENDS "systemd, init-system-helpers (>= 1.52)")
set(CPACK_DEBIAN_DAEMON_DESCRIPTION [=[cleans up after ML training jobs however they end
 wardend supervises the data-loader workers, temporary files and POSIX
 shared-memory segments of training jobs from outside the job: when a job
 dies (SIGKILL, the OOM killer, a hang), it ends the job's processes, removes
 its files and segments and runs its cleanup hooks. wardenctl registers jobs
 and asks whether the node is clean for the next one.]=])
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
    ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)

set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-warden)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
set(CPACK_DEBIAN_PYTHON_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3 (>= 3.9)")
set(CPACK_DEBIAN_PYTHON_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/python3-warden/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/python3-warden/prerm)
set(CPACK_DEBIAN_PYTHON_DESCRIPTION [=[Python client for wardend
 Registers a training job, its DataLoader workers, temporary directories and
 shared-memory segments with wardend, which cleans them up however the job
 ends. Standard library only, with PyTorch DataLoader and Lightning helpers.]=])

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libwarden-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_DESCRIPTION [=[C++ client library for wardend
 Registers a training job and what it makes with wardend from C++: the static
 library libwarden.a, its headers, a CMake package and a pkg-config file.]=])

# What Debian policy asks of every package: a copyright file and, for a native package, a
# compressed changelog in /usr/share/doc/PACKAGE.
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/copyright
               ${CMAKE_BINARY_DIR}/packaging/copyright @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/changelog.in
               ${CMAKE_BINARY_DIR}/packaging/changelog @ONLY)
set(WARDEN_CHANGELOG_GZ ${CMAKE_BINARY_DIR}/packaging/changelog.gz)
add_custom_command(OUTPUT ${WARDEN_CHANGELOG_GZ}
  COMMAND gzip -9n -c ${CMAKE_BINARY_DIR}/packaging/changelog > ${WARDEN_CHANGELOG_GZ}
  DEPENDS ${CMAKE_BINARY_DIR}/packaging/changelog)
add_custom_target(package_changelog ALL DEPENDS ${WARDEN_CHANGELOG_GZ})
foreach(component_package IN ITEMS daemon:warden python:python3-warden dev:libwarden-dev)
  string(REPLACE ":" ";" pair ${component_package})
  list(GET pair 0 component)
  list(GET pair 1 package)
  install(FILES ${CMAKE_BINARY_DIR}/packaging/copyright ${WARDEN_CHANGELOG_GZ}
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package} COMPONENT ${component})
endforeach()
include(CPack)
