# warden_target_defaults(target): the warnings and sanitizer flags every warden target shares.
function(warden_target_defaults target)
  # Designated initializers that leave members to their defaults are the point of aggregate structs
  # with default member initializers; g++ would warn about each of them.
  # g++ 12 also misreports Asio's coroutine frame allocator as a new/delete mismatch (GCC bug
  # 109224); the frames are allocated and freed by the same recycling allocator.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
  endif()
  # Debian's hardening flags (what dpkg-buildflags gives a package): a root daemon that parses
  # its clients' words gets bounds-checked libc calls, stack canaries and a read-only GOT.
  # _FORTIFY_SOURCE needs the optimiser, so a Debug build goes without it; the sanitizer and
  # fuzzing builds check memory their own way, and their reports are worth more than an abort.
  if(NOT WARDEN_SANITIZE AND NOT WARDEN_FUZZ)
    target_compile_options(${target} PRIVATE -fstack-protector-strong
                                             $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2>)
    target_link_options(${target} PRIVATE -Wl,-z,relro,-z,now)
  endif()
  if(WARDEN_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer
                                             -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
  if(WARDEN_FUZZ)
    # Coverage for libFuzzer in everything the fuzz target links; the target adds the driver.
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                                             -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
