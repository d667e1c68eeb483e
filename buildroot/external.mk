include $(sort $(wildcard $(BR2_EXTERNAL_CAMBOX_PATH)/package/*/*.mk))
