// Must not compile: the core is plain C++: it may not reach /proc.
#include "world/process.h"
