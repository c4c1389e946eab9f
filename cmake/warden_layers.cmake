# warden_include_root(ROOT DIR...): a folder that holds one link per DIR, named as DIR is, and
# nothing else. A target whose include path is ROOT can include "NAME/x.h" for those folders only:
# a header of any other folder of the project is not there to be found, so including one fails the
# build ("No such file or directory") as surely as a syntax error does.
function(warden_include_root root)
  file(MAKE_DIRECTORY ${root})
  foreach(dir IN LISTS ARGN)
    get_filename_component(name ${dir} NAME)
    file(CREATE_LINK ${dir} ${root}/${name} SYMBOLIC)
  endforeach()
endfunction()
