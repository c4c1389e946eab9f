// Must not compile: the project's root is on no layer's include path.
#include "daemon/edge/service.h"
