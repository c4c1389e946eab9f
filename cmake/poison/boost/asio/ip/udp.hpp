// A header the supervisor core and the world side must not include (daemon/CMakeLists.txt):
// sockets, the state store, systemd, log sinks and the command line belong to the edge.
#error "warden layering: boost/asio/ip/udp.hpp is the edge's; this target is the core or the world side"
