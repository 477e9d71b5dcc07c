#include "vector_index.h"
