#include "npy.h"
