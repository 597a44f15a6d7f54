"""persodose.report"""
