// Must not compile: the protocol knows nothing of the daemon.
#include "daemon/core/supervisor.h"
