// Must not compile: the kernel side may not know the service that drives it.
#include "edge/service.h"
