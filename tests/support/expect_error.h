// code_of(fn): the ErrorCode that fn throws, for tests that assert on codes, not message text.
#pragma once

#include <gtest/gtest.h>

#include "warden/errors.h"

namespace warden::testing {

template <class Fn>
ErrorCode code_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "expected a warden::Error";
  return ErrorCode::internal;
}

}  // namespace warden::testing
