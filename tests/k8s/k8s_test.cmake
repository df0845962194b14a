# The shared control plane for every test with label `k8s`.
#
#   include(${PROJECT_SOURCE_DIR}/tests/k8s/k8s_test.cmake)
#   daxlease_k8s_test(my_k8s_test SOURCES a.cc LIBS daxlease_k8s ...)
#
# registers a gtest binary whose cases carry label `k8s`, require the CTest
# fixture `daxlease_k8s`, run alone (RUN_SERIAL: one API server for all, and
# timings such as leader election's) and get the environment variable
#   DAXLEASE_KUBECONFIG=<build>/k8s/kubeconfig   (admin, group system:masters)
# Beside it in <build>/k8s/: kubeconfig-user (a token user without RBAC
# rights) and env (server URL, CA, tokens, etcd URL as shell assignments).
# The fixture is two tests: k8s_control_plane_start (tests/k8s/control-plane.sh
# start: builds kube-apiserver on a cold cache, ~5-20 min, then starts etcd +
# kube-apiserver) and k8s_control_plane_stop. CTest runs them around the k8s
# tests automatically, also for `ctest -R <one test>`. The binaries link
# daxlease_k8s_testing (tests/k8s/k8s_testing.h).
include_guard(GLOBAL)

set(_daxlease_k8s_dir ${PROJECT_BINARY_DIR}/k8s)
add_test(NAME k8s_control_plane_start
         COMMAND ${PROJECT_SOURCE_DIR}/tests/k8s/control-plane.sh start ${_daxlease_k8s_dir})
set_tests_properties(k8s_control_plane_start PROPERTIES
  FIXTURES_SETUP daxlease_k8s LABELS k8s TIMEOUT 3600)
add_test(NAME k8s_control_plane_stop
         COMMAND ${PROJECT_SOURCE_DIR}/tests/k8s/control-plane.sh stop ${_daxlease_k8s_dir})
set_tests_properties(k8s_control_plane_stop PROPERTIES
  FIXTURES_CLEANUP daxlease_k8s LABELS k8s TIMEOUT 120)

function(daxlease_k8s_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  set(dir ${PROJECT_BINARY_DIR}/k8s)
  add_executable(${name} ${T_SOURCES})
  target_compile_options(${name} PRIVATE ${DAXLEASE_WARNINGS})
  target_link_libraries(${name} PRIVATE ${T_LIBS} daxlease_k8s_testing
                        GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS k8s FIXTURES_REQUIRED daxlease_k8s TIMEOUT 300
               RUN_SERIAL TRUE
               ENVIRONMENT "DAXLEASE_KUBECONFIG=${dir}/kubeconfig")
endfunction()
